"""Energy flows of a site or of the caller's org, per hour, day or month, each figure with its coverage."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from nattery_analytics.flows.schemas import Interval, OrgFlows, SiteFlows
from nattery_analytics.flows.service import FlowService
from nattery_shared.auth import Viewer

router = APIRouter(tags=["flows"])


def get_flows(request: Request) -> FlowService:
    flows: FlowService = request.state.flows
    return flows


FlowsDep = Annotated[FlowService, Depends(get_flows)]
From = Annotated[
    AwareDatetime | None,
    Query(
        alias="from",
        description="start (with its offset), floored to the hour; default: `to` minus a day, month or year",
    ),
]
To = Annotated[AwareDatetime | None, Query(description="end, exclusive, ceiled to the hour; default: now")]
IntervalQuery = Annotated[
    Interval, Query(description="hour (at most 31 days), day (400 days), month (3,700 days)")
]


@router.get("/sites/{site_id}/flows", summary="Energy flows of a site and of each of its devices")
async def site_flows(
    site_id: uuid.UUID,
    principal: Viewer,
    flows: FlowsDep,
    from_: From = None,
    to: To = None,
    interval: IntervalQuery = Interval.DAY,
) -> SiteFlows:
    return await flows.site_flows(principal.org_id, site_id, from_, to, interval)


@router.get("/flows", summary="Energy flows of the caller's org, and of each site over the range")
async def org_flows(
    principal: Viewer,
    flows: FlowsDep,
    from_: From = None,
    to: To = None,
    interval: IntervalQuery = Interval.DAY,
) -> OrgFlows:
    return await flows.org_flows(principal.org_id, from_, to, interval)
