"""Tariffs: viewers list them, admins create them and choose a site's import and export tariff."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from nattery_shared.auth import Admin, Viewer
from nattery_trading.deps import TariffsDep
from nattery_trading.tariffs.schemas import TariffIn, TariffOut

router = APIRouter(tags=["trading"])


@router.post("/tariffs", status_code=status.HTTP_201_CREATED, summary="Create a tariff (admin)")
async def create_tariff(body: TariffIn, principal: Admin, tariffs: TariffsDep) -> TariffOut:
    return TariffOut.model_validate(await tariffs.create(principal.org_id, body), from_attributes=True)


@router.get("/tariffs")
async def list_tariffs(principal: Viewer, tariffs: TariffsDep) -> list[TariffOut]:
    return [TariffOut.model_validate(r, from_attributes=True) for r in await tariffs.of_org(principal.org_id)]


@router.put(
    "/sites/{site_id}/tariffs/{direction}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Use a tariff for the site's import or export (admin)",
)
async def set_site_tariff(
    site_id: uuid.UUID,
    direction: str,
    tariff_id: Annotated[uuid.UUID, Query()],
    principal: Admin,
    tariffs: TariffsDep,
) -> None:
    await tariffs.use_for_site(principal.org_id, site_id, direction, tariff_id)
