"""Fixtures of the markets/weather/sites tests: a replay server over local HTTP, a pool, and the events
this service publishes, collected from RabbitMQ (each parsed against the contracts on arrival)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent
from nattery_integration.app import SCHEMA
from nattery_integration.replay.runner import ReplayServer
from nattery_integration.settings import IntegrationSettings
from nattery_shared.db import create_pool, open_pool
from nattery_shared.outbox import OutboxRelay
from nattery_shared.rabbit import EventBus, QueueSpec

ROUTING_KEYS = ["market.prices_updated", "niv.updated", "weather.forecast_updated", "forecast.updated"]


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
async def pool(migrated: None, settings: IntegrationSettings) -> AsyncIterator[AsyncConnectionPool]:
    p = create_pool(settings.postgres, schema=SCHEMA, name="integration-market-tests")
    await open_pool(p)
    yield p
    await p.close()


@dataclass
class Published:
    """Events of the collector's routing keys, as they arrived (already validated by ``parse_event``)."""

    relay: OutboxRelay
    events: list[CloudEvent[Any]] = field(default_factory=list)

    def of(self, type_: str, subject_prefix: str = "") -> list[CloudEvent[Any]]:
        return [e for e in self.events if e.type == type_ and (e.subject or "").startswith(subject_prefix)]


@pytest.fixture
async def published(settings: IntegrationSettings, pool: AsyncConnectionPool) -> AsyncIterator[Published]:
    """The outbox relay running against RabbitMQ, and a queue collecting what it publishes."""
    bus = EventBus(settings.rabbit, source="/tests/integration")
    bus.start()
    await bus.wait_connected(10)
    relay = OutboxRelay(pool, bus, poll_s=0.05)
    out = Published(relay)

    async def collect(event: CloudEvent[Any]) -> None:
        out.events.append(event)

    await bus.consume(QueueSpec(f"tests.integration.{uuid.uuid4().hex[:8]}", ROUTING_KEYS), collect)
    task = asyncio.create_task(relay.run())
    yield out
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await bus.close()


def client_for(replay: ReplayServer, provider: str) -> httpx.AsyncClient:
    """A plain client on the replay's base URL for ``provider`` (the provider clients' retries and
    breaker are tested by the plumbing tests)."""
    return httpx.AsyncClient(base_url=replay.base_url(provider) + "/", timeout=10)
