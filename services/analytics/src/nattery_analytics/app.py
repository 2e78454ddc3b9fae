"""Nattery analytics service: app factory and lifespan (clients built once, handed to handlers as dependencies)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from nattery_analytics.flows.endpoints import router as flows_router
from nattery_analytics.flows.service import FlowService
from nattery_analytics.forecasts.endpoints import router as forecasts_router
from nattery_analytics.forecasts.service import LoadForecastService
from nattery_analytics.settings import AnalyticsSettings, get_settings
from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.resources import open_resources

SCHEMA = "analytics"


def create_app(settings: AnalyticsSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    cfg = settings.analytics

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(
            settings, readiness, schema=SCHEMA, postgres=True, redis=False, rabbit=True, influx=True
        ) as res:
            assert res.pool and res.bus and res.influx
            forecasts = LoadForecastService(res.pool, res.influx, res.bus, cfg)
            flows = FlowService(res.pool, res.influx, cfg)
            tasks: list[asyncio.Task[None]] = []
            if cfg.forecast_enabled:
                tasks.append(asyncio.create_task(forecasts.run(), name="load-forecasts"))
            if cfg.flows_enabled:
                tasks.append(asyncio.create_task(flows.run(), name="energy-flows"))
            try:
                yield {**res.as_state(), "load_forecasts": forecasts, "flows": flows}
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    return create_service_app(
        settings=settings,
        title="Nattery analytics service",
        description="KPIs, energy flows, savings and P&L, forecasts, reports and downsampled rollups.",
        lifespan=lifespan,
        routers=[forecasts_router, flows_router],
    )
