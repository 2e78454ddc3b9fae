"""The low-volume MQTT topics: ``state`` (presence), ``event`` (faults, alarms), ``command/ack``.

A separate MQTT session from telemetry so that an InfluxDB outage (which holds telemetry acks) never
delays a status change or a command acknowledgement. Same rule: acknowledged after it is stored.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from nattery_contracts.mqtt import CommandAck, EdgeEvent, State
from nattery_device.cancel import raise_if_cancelling
from nattery_device.commands.service import CommandService
from nattery_device.mqtt.subscriber import AckingSubscriber, Delivery
from nattery_device.presence.service import PresenceService
from nattery_device.stream.hub import StreamPublisher
from nattery_device.telemetry.registry import DeviceEntry, RegistryCache
from nattery_device.telemetry.rejected import RejectedStore, Rejection

log = logging.getLogger(__name__)


class ControlIngest:
    def __init__(
        self,
        subscriber: AckingSubscriber,
        registry: RegistryCache,
        rejected: RejectedStore,
        presence: PresenceService,
        commands: CommandService,
        pool: AsyncConnectionPool,
        stream: StreamPublisher,
    ) -> None:
        self._subscriber = subscriber
        self._registry = registry
        self._rejected = rejected
        self._presence = presence
        self._commands = commands
        self._pool = pool
        self._stream = stream

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a client below may have swallowed our cancellation
            batch = await self._subscriber.next_batch(200)
            done: list[Delivery] = []
            for delivery in batch:
                try:
                    await self.handle(delivery)
                    done.append(delivery)
                except Exception:
                    raise_if_cancelling()
                    # Left unacknowledged: redelivered after the next reconnect.
                    log.exception("handling %s failed", delivery.topic)
            self._subscriber.ack(done)

    async def handle(self, delivery: Delivery) -> None:
        parts = delivery.topic.split("/", 4)
        entry = await self._registry.resolve(parts[2], parts[3]) if len(parts) == 5 else None
        if entry is None:
            site = self._registry.site(parts[2]) if len(parts) == 5 else None
            await self._rejected.keep(
                [
                    Rejection(
                        delivery.topic,
                        "unknown_device" if site else "unknown_site",
                        "not in the registry",
                        delivery.payload,
                        site.org_id if site else None,
                    )
                ]
            )
            return
        suffix = parts[4]
        try:
            if suffix == "state":
                await self._presence.apply_state(entry, State.model_validate_json(delivery.payload))
            elif suffix == "event":
                await self._store_event(entry, EdgeEvent.model_validate_json(delivery.payload))
            elif suffix == "command/ack":
                await self._commands.apply_ack(
                    entry.site_id, entry.id, CommandAck.model_validate_json(delivery.payload)
                )
            else:
                raise ValueError(f"unexpected topic suffix {suffix!r}")
        except (ValidationError, ValueError) as err:
            await self._rejected.keep(
                [
                    Rejection(
                        delivery.topic, "invalid_payload", str(err)[:2000], delivery.payload, entry.org_id
                    )
                ]
            )

    async def _store_event(self, entry: DeviceEntry, event: EdgeEvent) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                """INSERT INTO edge_events (org_id, site_id, device_id, ts, code, severity, message, details)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                (
                    entry.org_id,
                    entry.site_id,
                    entry.id,
                    event.ts,
                    event.code,
                    event.severity.value,
                    event.message,
                    Jsonb(event.details),
                ),
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
