"""Load forecasts: viewers read the latest, operators issue one now (it is published as well)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from nattery_analytics.deps import LoadForecastsDep
from nattery_analytics.forecasts.schemas import LoadForecast
from nattery_shared.auth import Operator, Viewer

router = APIRouter(tags=["forecasts"])


@router.get("/sites/{site_id}/forecasts/load", summary="The latest day-ahead load forecast of a site")
async def latest_load_forecast(
    site_id: uuid.UUID, principal: Viewer, forecasts: LoadForecastsDep
) -> LoadForecast:
    return await forecasts.latest(principal.org_id, site_id)


@router.post(
    "/sites/{site_id}/forecasts/load",
    status_code=status.HTTP_201_CREATED,
    summary="Issue the next local day's load forecast now and publish it (forecast.updated)",
)
async def issue_load_forecast(
    site_id: uuid.UUID, principal: Operator, forecasts: LoadForecastsDep
) -> LoadForecast:
    return await forecasts.issue_on_request(principal.org_id, site_id)
