"""Security tests from outside: device-service in process with its ingest, the project's broker and InfluxDB."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TestIssuer

REPO = Path(__file__).resolve().parents[2]
# Helpers shared with services/device/tests (--import-mode=importlib gives them no package).
sys.path.insert(0, str(REPO / "services" / "device" / "tests"))

from device_test_helpers import device_settings  # noqa: E402

from nattery_device.settings import DeviceSettings  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def device_migrated() -> Iterator[None]:
    from device_test_helpers import remove_provisioned

    migrations.upgrade(REPO / "services/device/src/nattery_device/migrations", TEST_PG_DSN, "device")
    yield
    remove_provisioned()


@pytest.fixture
def settings(test_issuer: TestIssuer) -> Iterator[DeviceSettings]:
    from nattery_device.mqtt.subscriber import forget_session

    s = device_settings(test_issuer)
    yield s
    for suffix in ("telemetry", "control"):
        forget_session(s.mqtt, f"{s.device.mqtt_client_id}-{suffix}")


@pytest.fixture
async def client(settings: DeviceSettings) -> AsyncIterator[httpx.AsyncClient]:
    from nattery_device.app import create_app

    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://device") as c:
            yield c
