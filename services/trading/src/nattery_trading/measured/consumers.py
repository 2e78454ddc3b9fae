"""``trading.site_states``: device-service's ``site.state_measured``, once per site per interval.

Durable quorum queue with the bus's delivery limit and DLQ (``trading.site_states.dlq``); a malformed
message is dead-lettered at once by the bus and counted in ``nattery_amqp_messages_total``. Idempotent
by event id: the id is recorded in the same transaction as the state and the slot's actuals. A stored
SOC far from the plan's re-plans the site (``PlanningService.check_drift``, once per slot and version).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from nattery_contracts.events import CloudEvent, EventType, SiteStateMeasured
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.measured.service import MeasuredStateService

log = logging.getLogger(__name__)

SITE_STATES_QUEUE = "trading.site_states"

SITE_STATES = Counter(
    "nattery_trading_site_states_total",
    "site.state_measured events applied, by outcome",
    ["outcome"],  # stored | older | unknown_site | duplicate
)


class SiteStateConsumer:
    def __init__(self, states: MeasuredStateService, queue: str = SITE_STATES_QUEUE) -> None:
        self.states = states
        self.spec = QueueSpec(queue, [EventType.SITE_STATE_MEASURED.value])

    async def register(self, bus: EventBus) -> None:
        await bus.consume(self.spec, self.on_state)

    async def on_state(self, event: CloudEvent[Any]) -> None:
        data: SiteStateMeasured = event.data
        outcome = await self.states.apply(event.id, self.spec.name, data)
        SITE_STATES.labels(outcome).inc()
        if outcome == "unknown_site":
            log.debug("state of site %s not configured in trading: skipped", data.site_id)
