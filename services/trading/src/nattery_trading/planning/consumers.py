"""RabbitMQ consumers: new prices, forecasts and dispatches re-plan the sites they concern.

They store what arrived and enqueue one plan job per affected site on the ``trading.site_plans`` work
queue (``fleet/site_plans.py``); competing workers plan. The job key is the site and the event's id, so
a redelivered event (or a crash between enqueueing and marking the event processed) never publishes two
versions for the same input."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from nattery_contracts.events import CloudEvent, DispatchReceived, ForecastUpdated, MarketPricesUpdated
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.planning.service import PlanningService

log = logging.getLogger(__name__)

PRICES_QUEUE = QueueSpec("trading.prices", ["market.prices_updated"])
FORECASTS_QUEUE = QueueSpec("trading.forecasts", ["forecast.updated"])
DISPATCHES_QUEUE = QueueSpec("trading.dispatches", ["dispatch.received"])


class PlanningConsumers:
    def __init__(self, planning: PlanningService) -> None:
        self.planning = planning
        self.repo = planning.repo

    async def register(self, bus: EventBus) -> None:
        for spec, handler in (
            (PRICES_QUEUE, self.on_prices),
            (FORECASTS_QUEUE, self.on_forecast),
            (DISPATCHES_QUEUE, self.on_dispatch),
        ):
            await bus.consume(spec, self._once(spec.name, handler), already_handled=self._seen)

    async def _seen(self, event_id: str) -> bool:
        async with self.repo.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM processed_events WHERE event_id = %s", (uuid.UUID(event_id),)
            )
            return await cur.fetchone() is not None

    def _once(self, queue: str, handler: Any) -> Any:
        async def wrapped(event: CloudEvent[Any]) -> None:
            await handler(event)
            async with self.repo.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO processed_events (event_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (event.id, queue),
                )

        return wrapped

    async def on_prices(self, event: CloudEvent[Any]) -> None:
        data: MarketPricesUpdated = event.data
        region = data.region or ""
        await self.repo.upsert_prices(
            data.market,
            region,
            data.direction,
            [(p.start, p.end, p.price_p_per_kwh) for p in data.prices],
            data.published_at,
            data.currency,
        )
        sites = await self.repo.sites_on_market(data.market, region, data.direction)
        n = await self.planning.request_replan(
            sites, f"{data.market} {data.direction} prices updated", f"event:{event.id}"
        )
        log.info("%s %s prices (%s): %d plan jobs enqueued", data.market, data.direction, data.currency, n)

    async def on_forecast(self, event: CloudEvent[Any]) -> None:
        data: ForecastUpdated = event.data
        site = await self.repo.get_site(data.site_id)
        if site is None or site["org_id"] != data.org_id:
            log.warning("forecast for unknown site %s ignored", data.site_id)
            return
        await self.repo.upsert_forecast(
            data.site_id, data.model, [(p.start, p.end, p.load_kw, p.pv_kw) for p in data.points]
        )
        await self.planning.request_replan(
            [data.site_id], f"forecast updated ({data.model})", f"event:{event.id}"
        )

    async def on_dispatch(self, event: CloudEvent[Any]) -> None:
        data: DispatchReceived = event.data
        await self.planning.receive_dispatch(data)
