"""RabbitMQ: other services' audit entries and commands into the audit log (queue ``user.audit``)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, EventType
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_user.audit import service

AUDIT_QUEUE = QueueSpec(
    name="user.audit",
    routing_keys=[EventType.AUDIT_RECORDED.value, EventType.COMMAND_REQUESTED.value],
)


async def start(bus: EventBus, pool: AsyncConnectionPool) -> None:
    async def on_event(event: CloudEvent[Any]) -> None:
        await service.record_event(pool, event)  # idempotent by event id (unique audit_log.event_id)

    await bus.consume(AUDIT_QUEUE, on_event)
