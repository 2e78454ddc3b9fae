"""Where commands and their answers come in: trading's ``command.requested`` and ``schedule.published``
(RabbitMQ) become commands; the edge's ``command/ack`` (MQTT, through ingest) moves them on."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from nattery_contracts.events import CloudEvent, CommandRequested, SchedulePublished
from nattery_contracts.mqtt import CommandAck, CommandType, SetScheduleParams
from nattery_device.commands.service import SCHEDULE_NAMESPACE, CommandService
from nattery_device.devices.registry import DeviceEntry
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_shared.errors import NotFound, Unprocessable
from nattery_shared.rabbit import EventBus, QueueSpec

COMMANDS_QUEUE = QueueSpec("device.commands", ["command.requested"])
SCHEDULES_QUEUE = QueueSpec("device.schedules", ["schedule.published"])
log = logging.getLogger(__name__)


REFUSED = Counter(
    "nattery_device_command_events_refused_total",
    "command.requested / schedule.published events refused",
    ["queue"],
)


@contextlib.asynccontextmanager
async def _refusals(event: CloudEvent[Any], queue: str) -> AsyncIterator[None]:
    """An event that can never become a command (unknown site or device, parameters outside the contract
    or the site's limits) is logged, counted and acknowledged: redelivering it cannot help. Anything
    else (PostgreSQL down, ...) propagates and is retried by the queue."""
    try:
        yield
    except (NotFound, Unprocessable, ValidationError, ValueError) as err:
        REFUSED.labels(queue).inc()
        log.warning("%s event %s refused: %s", event.type.value, event.id, str(err)[:300])


def schedule_command_id(schedule_id: uuid.UUID, version: int) -> uuid.UUID:
    """The same schedule version always becomes the same command (idempotent redelivery)."""
    return uuid.uuid5(SCHEDULE_NAMESPACE, f"{schedule_id}:{version}")


class CommandConsumers:
    def __init__(self, pool: AsyncConnectionPool, commands: CommandService) -> None:
        self._pool = pool
        self._commands = commands

    async def register(self, bus: EventBus) -> None:
        # Creating a command is idempotent by its id; the ids of events applied are kept so a
        # redelivery is skipped before any work (marked after the handler, refused events included).
        seen = PROCESSED_EVENTS.checker(self._pool)
        for spec, handler in (
            (COMMANDS_QUEUE, self.on_command_requested),
            (SCHEDULES_QUEUE, self.on_schedule_published),
        ):
            await bus.consume(
                spec, PROCESSED_EVENTS.marking(self._pool, spec.name, handler), already_handled=seen
            )

    async def on_command_requested(self, event: CloudEvent[Any]) -> None:
        data: CommandRequested = event.data
        async with _refusals(event, COMMANDS_QUEUE.name):
            await self._commands.create_from_event(
                command_id=data.command_id,
                org_id=data.org_id,
                site_id=data.site_id,
                device_id=data.device_id,
                command_type=CommandType(data.type),
                params=data.params,
                expires_at=data.expires_at,
                source=f"event:{event.type.value}:{data.requested_by}",
            )

    async def on_schedule_published(self, event: CloudEvent[Any]) -> None:
        data: SchedulePublished = event.data
        async with _refusals(event, SCHEDULES_QUEUE.name):
            params = SetScheduleParams(slots=data.slots, valid_until=data.valid_until).model_dump(mode="json")
            await self._commands.create_from_event(
                command_id=schedule_command_id(data.schedule_id, data.version),
                org_id=data.org_id,
                site_id=data.site_id,
                device_id=data.device_id,
                command_type=CommandType.SET_SCHEDULE,
                params=params,
                expires_at=data.valid_until,
                source=f"event:{event.type.value}:{data.schedule_id}:v{data.version}",
            )


class AckConsumer:
    """``command/ack`` messages from the edge (MQTT), handed over by ingest/edge_messages.py once the
    topic's site and device are known. An ack outside the contract raises ``ValidationError`` and is
    dead-lettered by the caller; an ack for a command of another device is logged and ignored."""

    def __init__(self, commands: CommandService) -> None:
        self._commands = commands

    async def handle(self, entry: DeviceEntry, payload: bytes) -> None:
        ack = CommandAck.model_validate_json(payload)
        await self._commands.apply_ack(entry.site_id, entry.id, ack)
