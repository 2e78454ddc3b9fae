"""Trading fixtures: migrated test database, an in-process app with its lifespan, and a way to make a
site known to trading."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, DeviceRegistered, EventType, make_event
from nattery_shared import migrations
from nattery_shared.db import create_pool, open_pool
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, test_settings_kwargs
from nattery_trading.app import SCHEMA, create_app
from nattery_trading.settings import TradingSettings
from nattery_trading.sites.consumers import SiteRegistryConsumer
from nattery_trading.sites.repository import SiteRegistry

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_trading" / "migrations"


@pytest.fixture(scope="session")
def migrated() -> None:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)


@pytest.fixture
def settings(test_issuer: TestIssuer) -> TradingSettings:
    return TradingSettings(**test_settings_kwargs(test_issuer))


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 20.0) -> None:
    """Until ``/readyz`` answers 200: the bus connects in the background and declares the consumers'
    queues then, so an event published before that would not reach them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (r := await client.get("/readyz")).status_code != 200:
        assert loop.time() < deadline, f"trading not ready: {r.text}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def client(migrated: None, settings: TradingSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://trading") as c:
            await wait_ready(c)
            yield c


@pytest.fixture
async def bus(settings: TradingSettings) -> AsyncIterator[EventBus]:
    """An event bus on the test vhost, to publish events to the service and collect what it publishes."""
    b = EventBus(settings.rabbit, source="/tests/trading")
    b.start()
    await b.wait_connected(10)
    yield b
    await b.close()


def device_registered(org: uuid.UUID, site: uuid.UUID, device: uuid.UUID | None = None) -> CloudEvent[Any]:
    """The event device-service publishes when a device is added to a site."""
    device = device or uuid.uuid4()
    return make_event(
        EventType.DEVICE_REGISTERED,
        DeviceRegistered(
            org_id=org,
            site_id=site,
            device_id=device,
            site_slug=f"site-{site.hex[:8]}",
            device_slug="inv1",
            kind="inverter",
        ),
        source="/services/device",
        subject=str(device),
    )


RegisterSite = Callable[..., Awaitable[uuid.UUID]]  # (pool, org, site=None) -> site


@pytest.fixture
def register_site() -> RegisterSite:
    """``await register_site(pool, org, site=None)``: make a site (a new one by default) known to trading
    as registered to ``org``, by handing a ``device.registered`` to the real consumer's handler without
    the broker (``test_site_registry.py`` proves the broker path)."""

    async def register(pool: AsyncConnectionPool, org: uuid.UUID, site: uuid.UUID | None = None) -> uuid.UUID:
        site = site or uuid.uuid4()
        await SiteRegistryConsumer(SiteRegistry(pool)).on_device_registered(device_registered(org, site))
        assert await SiteRegistry(pool).org_of(site) == org
        return site

    return register


@pytest.fixture
def make_device_registered() -> Callable[..., CloudEvent[Any]]:
    return device_registered


@pytest.fixture
async def pool(migrated: None, settings: TradingSettings) -> AsyncIterator[Any]:
    p = create_pool(settings.postgres, schema=SCHEMA, name="trading-tests")
    await open_pool(p)
    yield p
    await p.close()
