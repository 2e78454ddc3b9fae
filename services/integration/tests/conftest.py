"""Integration-service fixtures: the migrated test database, settings pointing at the local test servers,
an in-process app with its lifespan, and ``ScriptedServer`` (a local HTTP server whose answers a test
scripts and whose requests it records) standing in for a third party."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from nattery_integration.app import SCHEMA, create_app
from nattery_integration.settings import IntegrationSettings
from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TestIssuer

# Helpers shared by this folder's tests; --import-mode=importlib gives the folder no package.
sys.path.insert(0, str(Path(__file__).parent))
from integration_test_helpers import ScriptedServer, integration_settings

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_integration" / "migrations"


@pytest.fixture(scope="session", autouse=True)
def migrated() -> None:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)


@pytest.fixture
def settings(test_issuer: TestIssuer) -> IntegrationSettings:
    return integration_settings(test_issuer)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
async def client(settings: IntegrationSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://integration") as c:
            yield c
