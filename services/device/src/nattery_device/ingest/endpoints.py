"""Ingest's dead letters (admin): the org's recent MQTT messages that ingest could not take."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from nattery_device.ingest.dead_letters import RejectedStore
from nattery_shared.auth import Admin

router = APIRouter(tags=["telemetry"])


@router.get("/ingest/rejected", summary="Recent MQTT messages of the org's sites that ingest rejected")
async def rejected(
    request: Request, principal: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    store: RejectedStore = request.state.rejected
    return await store.recent(principal.org_id, limit)
