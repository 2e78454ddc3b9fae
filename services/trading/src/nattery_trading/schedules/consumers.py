"""``trading.forecasts``: a site's ``forecast.updated`` is stored and re-plans the site (the job key is
the site and the event's id: a redelivery publishes nothing new)."""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, ForecastUpdated
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.schedules.service import PlanningService

log = logging.getLogger(__name__)

FORECASTS_QUEUE = QueueSpec("trading.forecasts", ["forecast.updated"])


class ForecastConsumer:
    def __init__(self, planning: PlanningService, pool: AsyncConnectionPool) -> None:
        self.planning = planning
        self.pool = pool  # consumed event ids (processed_events)

    async def register(self, bus: EventBus) -> None:
        await bus.consume(
            FORECASTS_QUEUE,
            PROCESSED_EVENTS.marking(self.pool, FORECASTS_QUEUE.name, self.on_forecast),
            already_handled=PROCESSED_EVENTS.checker(self.pool),
        )

    async def on_forecast(self, event: CloudEvent[Any]) -> None:
        data: ForecastUpdated = event.data
        if not await self.planning.store_forecast(data):
            log.warning("forecast for unknown site %s ignored", data.site_id)
            return
        await self.planning.request_replan(
            [data.site_id], f"forecast updated ({data.model})", f"event:{event.id}"
        )
