"""Device-service fixtures: migrated test database, an in-process app with its lifespan."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from nattery_device.app import SCHEMA, create_app
from nattery_device.mqtt.subscriber import forget_session
from nattery_device.settings import DeviceSettings
from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TestIssuer

# Helpers shared with tests/device (end to end); --import-mode=importlib has no package for them.
sys.path.insert(0, str(Path(__file__).parent))
from device_test_helpers import device_settings, remove_provisioned, wait_ready

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_device" / "migrations"


@pytest.fixture(scope="session", autouse=True)
def migrated() -> Iterator[None]:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)
    yield
    remove_provisioned()


@pytest.fixture
def settings(test_issuer: TestIssuer) -> Iterator[DeviceSettings]:
    s = device_settings(test_issuer)
    yield s
    for suffix in ("telemetry", "control"):
        forget_session(s.mqtt, f"{s.device.mqtt_client_id}-{suffix}")


@pytest.fixture
async def client(settings: DeviceSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://device") as c:
            await wait_ready(c)
            yield c
