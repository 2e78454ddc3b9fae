"""Edge events (viewer): a device's faults, alarms and control notices, newest first, paged."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from nattery_device.events import service
from nattery_device.events.schemas import EdgeEventOut
from nattery_shared.auth import Viewer
from nattery_shared.deps import PoolDep
from nattery_shared.errors import BadRequest
from nattery_shared.validation import Offset

router = APIRouter(tags=["events"])


@router.get(
    "/devices/{device_id}/events",
    summary="Events the device's edge published, newest first; optionally within [start, end)",
)
async def device_events(
    device_id: uuid.UUID,
    principal: Viewer,
    pool: PoolDep,
    start: AwareDatetime | None = None,
    end: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[EdgeEventOut]:
    if start is not None and end is not None and end <= start:
        raise BadRequest("end must be after start")
    return await service.list_for_device(
        pool, principal.org_id, device_id, start=start, end=end, limit=limit, offset=offset
    )
