"""Emergency stops: operators stop and release, viewers list them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from nattery_shared.auth import Operator, Viewer
from nattery_trading.deps import DispatchesDep, SitesDep
from nattery_trading.dispatches.schemas import EmergencyStopIn, EmergencyStopOut

router = APIRouter(tags=["trading"])


@router.post(
    "/emergency-stops",
    status_code=status.HTTP_201_CREATED,
    summary="Hold a site (or every site of the org) until released (operator)",
)
async def create_stop(
    body: EmergencyStopIn, principal: Operator, dispatches: DispatchesDep, sites: SitesDep
) -> EmergencyStopOut:
    if body.site_id is not None:
        await sites.require_registered(principal.org_id, body.site_id)
    row = await dispatches.emergency_stop(principal.org_id, body.site_id, body.reason, principal.subject)
    return EmergencyStopOut.model_validate(row, from_attributes=True)


@router.delete("/emergency-stops/{stop_id}", summary="Release an emergency stop (operator)")
async def release_stop(
    stop_id: uuid.UUID, principal: Operator, dispatches: DispatchesDep
) -> EmergencyStopOut:
    row = await dispatches.release_stop(principal.org_id, stop_id, principal.subject)
    return EmergencyStopOut.model_validate(row, from_attributes=True)


@router.get("/emergency-stops")
async def list_stops(
    principal: Viewer, dispatches: DispatchesDep, active: Annotated[bool, Query()] = True
) -> list[EmergencyStopOut]:
    return [
        EmergencyStopOut.model_validate(r, from_attributes=True)
        for r in await dispatches.stops(principal.org_id, active)
    ]
