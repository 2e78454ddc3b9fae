"""Trading fixtures: migrated test database and an in-process app with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, test_settings_kwargs
from nattery_trading.app import SCHEMA, create_app
from nattery_trading.settings import TradingSettings

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_trading" / "migrations"


@pytest.fixture(scope="session")
def migrated() -> None:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)


@pytest.fixture
def settings(test_issuer: TestIssuer) -> TradingSettings:
    return TradingSettings(**test_settings_kwargs(test_issuer))


@pytest.fixture
async def client(migrated: None, settings: TradingSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://trading") as c:
            yield c
