"""Analytics fixtures: migrated test schema, an InfluxDB database of its own, an in-process app, and the
events it publishes collected from RabbitMQ."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from psycopg_pool import AsyncConnectionPool

from nattery_analytics.app import SCHEMA, create_app
from nattery_analytics.flows.service import FlowService
from nattery_analytics.settings import AnalyticsSection, AnalyticsSettings
from nattery_contracts.events import CloudEvent
from nattery_shared import migrations
from nattery_shared.db import create_pool, open_pool
from nattery_shared.influx import InfluxClient
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_shared.settings import InfluxSettings
from nattery_shared.testing import TEST_INFLUX_URL, TEST_PG_DSN, TestIssuer, test_settings_kwargs

# Helpers the tests import; --import-mode=importlib has no package for them.
sys.path.insert(0, str(Path(__file__).parent))
from analytics_test_helpers import Received

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_analytics" / "migrations"
# Its own database: the scheduled job forecasts every site with recent load in the database, and other
# packages' tests write inverter telemetry into nattery_test.
INFLUX_DB = "nattery_test_analytics"


@pytest.fixture(scope="session", autouse=True)
def migrated() -> None:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)


@pytest.fixture(scope="session")
async def influx_db() -> AsyncIterator[InfluxSettings]:
    settings = InfluxSettings(url=TEST_INFLUX_URL, database=INFLUX_DB)
    client = InfluxClient(settings)
    await client.admin(f'DROP DATABASE "{INFLUX_DB}"')
    await client.admin(f'CREATE DATABASE "{INFLUX_DB}"')
    await client.close()
    yield settings


@pytest.fixture
async def influx(influx_db: InfluxSettings) -> AsyncIterator[InfluxClient]:
    client = InfluxClient(influx_db)
    yield client
    await client.close()


@pytest.fixture
def settings(test_issuer: TestIssuer, influx_db: InfluxSettings) -> AnalyticsSettings:
    kwargs = {**test_settings_kwargs(test_issuer), "influx": influx_db}
    # The schedules are driven by the tests (run_due, refresh with a chosen time), not by the app's loops.
    return AnalyticsSettings(
        **kwargs, analytics=AnalyticsSection(forecast_enabled=False, flows_enabled=False)
    )


@pytest.fixture
async def client(settings: AnalyticsSettings) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
            yield c


@pytest.fixture
async def pool(settings: AnalyticsSettings) -> AsyncIterator[AsyncConnectionPool]:
    p = create_pool(settings.postgres, schema=SCHEMA, name="analytics-tests")
    await open_pool(p)
    yield p
    await p.close()


@pytest.fixture
async def bus(settings: AnalyticsSettings) -> AsyncIterator[EventBus]:
    b = EventBus(settings.rabbit, source="/services/analytics")
    b.start()
    await b.wait_connected(10)
    yield b
    await asyncio.wait_for(b.close(), 10)


@pytest.fixture
async def forecasts_received(settings: AnalyticsSettings) -> AsyncIterator[Received]:
    """A queue of this test's own, bound to forecast.updated (events parsed against the contract)."""
    bus = EventBus(settings.rabbit, source="/tests/analytics")
    bus.start()
    await bus.wait_connected(10)
    out = Received()

    async def collect(event: CloudEvent[Any]) -> None:
        out.events.append(event)

    await bus.consume(QueueSpec(f"tests.analytics.{uuid.uuid4().hex[:8]}", ["forecast.updated"]), collect)
    yield out
    await asyncio.wait_for(bus.close(), 10)


@pytest.fixture
def flows(pool: AsyncConnectionPool, influx: InfluxClient, settings: AnalyticsSettings) -> FlowService:
    """The energy flow rollups over the test servers; tests call ``refresh(now)`` themselves."""
    return FlowService(pool, influx, settings.analytics)
