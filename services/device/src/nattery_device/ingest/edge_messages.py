"""The edge's low-volume MQTT topics: ``state`` (presence), ``event`` (faults, alarms) and
``command/ack`` (the command path), each handed to the area that owns it once the topic's site and
device are known.

A separate MQTT session from telemetry so that an InfluxDB outage (which holds telemetry acks) never
delays a status change or a command acknowledgement. Same rule: acknowledged to the broker after it is
stored. A message for a site or device not in the registry, or outside the contract, is a dead letter
(``dead_letters.py``: counted, kept, acknowledged), never dropped silently.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from nattery_contracts.aio import raise_if_cancelling
from nattery_contracts.mqtt import EdgeEvent, State
from nattery_device.commands.consumers import AckConsumer
from nattery_device.devices.registry import RegistryCache
from nattery_device.events.service import EdgeEventService
from nattery_device.ingest.dead_letters import RejectedStore, Rejection
from nattery_device.mqtt.subscriber import AckingSubscriber, Delivery
from nattery_device.presence.service import PresenceService

log = logging.getLogger(__name__)


class EdgeMessageIngest:
    def __init__(
        self,
        subscriber: AckingSubscriber,
        registry: RegistryCache,
        rejected: RejectedStore,
        presence: PresenceService,
        acks: AckConsumer,
        events: EdgeEventService,
    ) -> None:
        self._subscriber = subscriber
        self._registry = registry
        self._rejected = rejected
        self._presence = presence
        self._acks = acks
        self._events = events

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
                await self._events.record(entry, EdgeEvent.model_validate_json(delivery.payload))
            elif suffix == "command/ack":
                await self._acks.handle(entry, delivery.payload)
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
