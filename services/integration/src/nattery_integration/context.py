"""Everything the lifespan builds once, handed to areas (``areas.Area``) and kept in the app state."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_integration.connections.crypto import SecretBox
from nattery_integration.providers.client import ProviderClients
from nattery_integration.settings import IntegrationSettings
from nattery_shared.outbox import OutboxRelay
from nattery_shared.rabbit import EventBus


@dataclass
class IntegrationContext:
    settings: IntegrationSettings
    pool: AsyncConnectionPool
    redis: Redis
    bus: EventBus
    clients: ProviderClients  # clients.get("octopus") -> httpx.AsyncClient (providers/client.py)
    relay: OutboxRelay  # events.OUTBOX.enqueue(conn, ...) in your transaction, then relay.poke()
    secrets: SecretBox  # decrypts connection secrets (connections/service.py has the read helpers)
    replica: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task that lives as long as the service (cancelled at shutdown)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task
