"""``trading.prices``: a market's ``market.prices_updated`` is stored and re-plans every site on it.

The consumer stores the prices and enqueues plan jobs for the sites on that market (``schedules``: jobs
of many sites on ``trading.site_plans``). The job key is the site and the event's id, so a redelivered
event (or a crash between enqueueing and marking the event processed) never publishes two versions for
the same input."""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, MarketPricesUpdated
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.schedules.service import PlanningService
from nattery_trading.tariffs.service import TariffService

log = logging.getLogger(__name__)

PRICES_QUEUE = QueueSpec("trading.prices", ["market.prices_updated"])


class PricesConsumer:
    def __init__(self, tariffs: TariffService, planning: PlanningService, pool: AsyncConnectionPool) -> None:
        self.tariffs = tariffs
        self.planning = planning
        self.pool = pool  # consumed event ids (processed_events)

    async def register(self, bus: EventBus) -> None:
        await bus.consume(
            PRICES_QUEUE,
            PROCESSED_EVENTS.marking(self.pool, PRICES_QUEUE.name, self.on_prices),
            already_handled=PROCESSED_EVENTS.checker(self.pool),
        )

    async def on_prices(self, event: CloudEvent[Any]) -> None:
        data: MarketPricesUpdated = event.data
        sites = await self.tariffs.store_prices(data)
        n = await self.planning.request_replan(
            sites, f"{data.market} {data.direction} prices updated", f"event:{event.id}"
        )
        log.info("%s %s prices (%s): %d sites to re-plan", data.market, data.direction, data.currency, n)
