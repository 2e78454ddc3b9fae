"""Nattery trading service: app factory and lifespan (clients built once, handed to handlers as dependencies)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.rabbit import EventBus
from nattery_shared.resources import open_resources
from nattery_trading.fleet.site_plans import SitePlanQueue
from nattery_trading.measured.consumers import SiteStateConsumer
from nattery_trading.planning.consumers import PlanningConsumers
from nattery_trading.planning.endpoints import router as planning_router
from nattery_trading.planning.repository import Repository
from nattery_trading.planning.service import PlanningService
from nattery_trading.settings import TradingSettings, get_settings
from nattery_trading.sites.consumers import SiteRegistryConsumer
from nattery_trading.sites.repository import SiteRegistry

SCHEMA = "trading"


def build_planning(
    settings: TradingSettings,
    pool: AsyncConnectionPool,
    bus: EventBus | None,
    queue: SitePlanQueue | None,
    worker_name: str | None = None,
) -> PlanningService:
    cfg = settings.trading
    return PlanningService(
        Repository(pool),
        bus,
        slot_minutes=cfg.slot_minutes,
        schedule_validity_h=cfg.schedule_validity_h,
        queue=queue,
        worker_name=worker_name,
        drift_soc_pct=cfg.drift_soc_pct,
        forecast_history_days=cfg.forecast_history_days,
        measured_state_max_age_s=cfg.measured_state_max_age_s,
    )


def create_app(settings: TradingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(
            settings, readiness, schema=SCHEMA, postgres=True, redis=False, rabbit=True, influx=False
        ) as resources:
            assert resources.pool is not None and resources.bus is not None
            cfg = settings.trading
            queue = SitePlanQueue(
                settings.rabbit.url.get_secret_value(),
                queue=cfg.site_plans_queue,
                prefetch=cfg.worker_prefetch,
                delivery_limit=settings.rabbit.delivery_limit,
            )
            queue.start()
            readiness.add("site_plans_queue", queue.ping)
            planning = build_planning(settings, resources.pool, resources.bus, queue)
            sites = SiteRegistry(resources.pool)
            if cfg.run_worker:  # this replica is one of the work queue's competing consumers
                await queue.consume(planning.run_job)
            await SiteRegistryConsumer(sites, cfg.sites_queue).register(resources.bus)
            await PlanningConsumers(planning).register(resources.bus)
            await SiteStateConsumer(planning.plan_start.states, planning, cfg.site_states_queue).register(
                resources.bus
            )
            periodic = asyncio.create_task(planning.run_periodic(cfg.replan_interval_s), name="replan-due")
            try:
                yield {**resources.as_state(), "planning": planning, "sites": sites, "site_plans": queue}
            finally:
                periodic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await periodic
                await queue.close()

    return create_service_app(
        settings=settings,
        title="Nattery trading service",
        description="Tariffs and prices, strategies, the optimiser, schedules, dispatches and back-tests.",
        lifespan=lifespan,
        routers=[planning_router],
    )
