"""``integration.sites``: device-service's ``device.registered`` tells this service which org owns
each site. Idempotent by event id (the event is marked processed in the same transaction as the
registration); a site never moves between orgs (device-service never moves one): a conflicting event
is logged and ignored. Malformed messages are dead-lettered by the bus (``integration.sites.dlq``)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from nattery_contracts.events import CloudEvent, DeviceRegistered, EventType
from nattery_integration.sites.repository import SitesRepository
from nattery_shared.rabbit import EventBus, QueueSpec

log = logging.getLogger(__name__)

SITES_QUEUE = "integration.sites"

SITE_REGISTRATIONS = Counter(
    "nattery_integration_site_registrations_total",
    "device.registered events applied to the integration service's site registry, by outcome",
    ["outcome"],  # applied | conflict | duplicate | wrong_type
)


class SitesConsumer:
    def __init__(self, repo: SitesRepository, queue: str = SITES_QUEUE) -> None:
        self.repo = repo
        self.spec = QueueSpec(queue, [EventType.DEVICE_REGISTERED.value])

    async def register(self, bus: EventBus) -> None:
        await bus.consume(self.spec, self.on_device_registered, already_handled=self.repo.processed)

    async def on_device_registered(self, event: CloudEvent[Any]) -> None:
        data = event.data
        if not isinstance(data, DeviceRegistered):
            log.warning("%s on %s ignored: only device.registered is expected", event.type, self.spec.name)
            SITE_REGISTRATIONS.labels("wrong_type").inc()
            return
        applied, org = await self.repo.register(
            event_id=event.id, queue=self.spec.name, site_id=data.site_id, org_id=data.org_id
        )
        if not applied:
            SITE_REGISTRATIONS.labels("duplicate").inc()
        elif org != data.org_id:
            SITE_REGISTRATIONS.labels("conflict").inc()
            log.error(
                "device.registered %s says site %s belongs to org %s, but it is registered to org %s: kept",
                event.id,
                data.site_id,
                data.org_id,
                org,
            )
        else:
            SITE_REGISTRATIONS.labels("applied").inc()
