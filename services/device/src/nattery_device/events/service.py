"""Edge events: stored (once per device, time and code), pushed to the org's live stream, and read
back newest first."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.mqtt import EdgeEvent
from nattery_device.devices.registry import DeviceEntry
from nattery_device.events import repository
from nattery_device.events.schemas import EdgeEventOut
from nattery_device.stream.hub import StreamPublisher
from nattery_shared.errors import NotFound

log = logging.getLogger(__name__)


class EdgeEventService:
    def __init__(self, pool: AsyncConnectionPool, stream: StreamPublisher) -> None:
        self._pool = pool
        self._stream = stream

    async def record(self, entry: DeviceEntry, event: EdgeEvent) -> None:
        async with self._pool.connection() as conn:
            await repository.insert(
                conn,
                org_id=entry.org_id,
                site_id=entry.site_id,
                device_id=entry.id,
                ts=event.ts,
                code=event.code,
                severity=event.severity.value,
                message=event.message,
                details=event.details,
            )
        message: dict[str, Any] = {
            "type": "event",
            "device_id": str(entry.id),
            "site_id": str(entry.site_id),
            **event.model_dump(mode="json"),
        }
        try:
            await self._stream.publish(entry.org_id, message)
        except Exception as err:
            log.warning("event stored but not streamed: %r", err)


async def list_for_device(
    pool: AsyncConnectionPool,
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int,
) -> list[EdgeEventOut]:
    async with pool.connection() as conn:
        if not await repository.device_exists(conn, org_id, device_id):
            raise NotFound("device not found")
        rows = await repository.for_device(
            conn, org_id, device_id, start=start, end=end, limit=limit, offset=offset
        )
    return [EdgeEventOut(**row) for row in rows]
