"""``trading.sites``: device-service's ``device.registered`` tells trading which org owns each site.

Durable quorum queue with the bus's delivery limit and DLQ (``trading.sites.dlq``); a malformed message
is dead-lettered at once by the bus and counted in ``nattery_amqp_messages_total{outcome="malformed"}``.
Idempotent by event id: the bus skips ids in ``processed_events``, and the registry marks the event
processed in the same transaction as the registration, so a concurrent redelivery changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from nattery_contracts.events import CloudEvent, DeviceRegistered, EventType
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.sites.repository import Outcome, SiteRegistry

log = logging.getLogger(__name__)

SITES_QUEUE = "trading.sites"

SITE_REGISTRATIONS = Counter(
    "nattery_trading_site_registrations_total",
    "device.registered events applied to trading's site registry, by outcome",
    ["outcome"],  # new | known | confirmed | corrected | conflict | duplicate | wrong_type
)


class SiteRegistryConsumer:
    def __init__(self, registry: SiteRegistry, queue: str = SITES_QUEUE) -> None:
        self.registry = registry
        self.spec = QueueSpec(queue, [EventType.DEVICE_REGISTERED.value])

    async def register(self, bus: EventBus) -> None:
        await bus.consume(self.spec, self.on_device_registered, already_handled=self.registry.processed)

    async def on_device_registered(self, event: CloudEvent[Any]) -> None:
        data = event.data
        if not isinstance(data, DeviceRegistered):  # published straight to the queue, not by routing key
            log.warning("%s on %s ignored: only device.registered is expected", event.type, self.spec.name)
            SITE_REGISTRATIONS.labels("wrong_type").inc()
            return
        got = await self.registry.record(
            event_id=event.id, queue=self.spec.name, site_id=data.site_id, org_id=data.org_id
        )
        SITE_REGISTRATIONS.labels(got.outcome.value).inc()
        if got.outcome is Outcome.NEW:
            log.info("site %s registered to org %s (device %s)", data.site_id, data.org_id, data.device_id)
        elif got.outcome is Outcome.CORRECTED:
            log.error(
                "site %s was configured in trading by org %s before trading checked sites; device-service "
                "registers it to org %s, which it now belongs to: org %s's trading rows for it are "
                "unreachable and must be removed by an operator (see services/trading/README.md)",
                data.site_id,
                got.previous_org_id,
                data.org_id,
                got.previous_org_id,
            )
        elif got.outcome is Outcome.CONFLICT:
            log.error(
                "device.registered %s says site %s belongs to org %s, but an earlier event registered it to "
                "org %s: kept as it was (device-service never moves a site between orgs)",
                event.id,
                data.site_id,
                data.org_id,
                got.org_id,
            )
