"""Nattery trading service: app factory and lifespan (clients and services built once, handed to
handlers as dependencies; ``deps.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.rabbit import EventBus
from nattery_shared.resources import open_resources
from nattery_trading.dispatches.consumers import DispatchConsumer
from nattery_trading.dispatches.endpoints import router as dispatches_router
from nattery_trading.dispatches.repository import DispatchRepository
from nattery_trading.dispatches.service import DispatchService
from nattery_trading.measured.consumers import SiteStateConsumer
from nattery_trading.measured.repository import MeasuredStates
from nattery_trading.measured.service import MeasuredStateService
from nattery_trading.schedules.consumers import ForecastConsumer
from nattery_trading.schedules.endpoints import router as schedules_router
from nattery_trading.schedules.queue import SitePlanQueue
from nattery_trading.schedules.repository import ScheduleRepository
from nattery_trading.schedules.service import PlanningService
from nattery_trading.settings import TradingSettings, get_settings
from nattery_trading.sites.consumers import SiteRegistryConsumer
from nattery_trading.sites.endpoints import router as sites_router
from nattery_trading.sites.repository import SiteRegistry, SiteRepository
from nattery_trading.sites.service import SiteService
from nattery_trading.strategies.endpoints import router as strategies_router
from nattery_trading.strategies.repository import StrategyRepository
from nattery_trading.strategies.service import StrategyService
from nattery_trading.tariffs.consumers import PricesConsumer
from nattery_trading.tariffs.endpoints import router as tariffs_router
from nattery_trading.tariffs.repository import TariffRepository
from nattery_trading.tariffs.service import TariffService

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
        ScheduleRepository(pool),
        bus,
        slot_minutes=cfg.slot_minutes,
        schedule_validity_h=cfg.schedule_validity_h,
        queue=queue,
        worker_name=worker_name,
        drift_soc_pct=cfg.drift_soc_pct,
        forecast_history_days=cfg.forecast_history_days,
        measured_state_max_age_s=cfg.measured_state_max_age_s,
        job_max_sites=cfg.job_max_sites,
    )


@dataclass(frozen=True)
class Services:
    """The trading service's areas, wired (the app's, a test's, a tool's)."""

    registry: SiteRegistry
    sites: SiteService
    tariffs: TariffService
    strategies: StrategyService
    dispatches: DispatchService
    planning: PlanningService


def build_services(
    settings: TradingSettings,
    pool: AsyncConnectionPool,
    bus: EventBus | None,
    queue: SitePlanQueue | None,
    worker_name: str | None = None,
) -> Services:
    registry = SiteRegistry(pool)
    sites = SiteService(registry, SiteRepository(pool))
    planning = build_planning(settings, pool, bus, queue, worker_name)
    return Services(
        registry=registry,
        sites=sites,
        tariffs=TariffService(TariffRepository(pool), sites),
        strategies=StrategyService(StrategyRepository(pool), sites, planning),
        dispatches=DispatchService(DispatchRepository(pool), planning),
        planning=planning,
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
            s = build_services(settings, resources.pool, resources.bus, queue)
            if cfg.run_worker:  # this replica is one of the work queue's competing consumers
                await queue.consume(s.planning.run_job)
            await SiteRegistryConsumer(s.registry, cfg.sites_queue).register(resources.bus)
            await PricesConsumer(s.tariffs, s.planning, resources.pool).register(resources.bus)
            await ForecastConsumer(s.planning, resources.pool).register(resources.bus)
            await DispatchConsumer(s.dispatches, resources.pool).register(resources.bus)
            states = MeasuredStateService(MeasuredStates(resources.pool), s.planning)
            await SiteStateConsumer(states, cfg.site_states_queue).register(resources.bus)
            periodic = asyncio.create_task(s.planning.run_periodic(cfg.replan_interval_s), name="replan-due")
            assert s.planning.relay is not None
            # publishes what a plan's own flush could not (RabbitMQ down, a crash after commit)
            relay = asyncio.create_task(s.planning.relay.run(), name="outbox-relay")
            try:
                yield {
                    **resources.as_state(),
                    "sites": s.sites,
                    "tariffs": s.tariffs,
                    "strategies": s.strategies,
                    "dispatches": s.dispatches,
                    "planning": s.planning,
                    "site_plans": queue,
                }
            finally:
                for task in (periodic, relay):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await queue.close()

    return create_service_app(
        settings=settings,
        title="Nattery trading service",
        description="Tariffs and prices, strategies, the optimiser, schedules, dispatches and back-tests.",
        lifespan=lifespan,
        routers=[sites_router, tariffs_router, strategies_router, schedules_router, dispatches_router],
    )
