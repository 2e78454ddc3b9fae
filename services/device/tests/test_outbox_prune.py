"""The outbox relay deletes published rows and consumed event ids after the retention period, and
nothing that is still unpublished or recent (real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from nattery_device.app import SCHEMA
from nattery_shared.db import create_pool, open_pool
from nattery_shared.outbox import OutboxRelay
from nattery_shared.rabbit import EventBus
from nattery_shared.settings import PostgresSettings, RabbitSettings
from nattery_shared.testing import TEST_PG_DSN


@pytest.fixture
async def pool() -> AsyncIterator[Any]:
    p = create_pool(PostgresSettings(dsn=SecretStr(TEST_PG_DSN)), schema=SCHEMA, name="test-prune")
    await open_pool(p)
    await p.wait()
    yield p
    await p.close()


async def _outbox_row(conn: Any, *, published_days_ago: float | None, created_days_ago: float) -> uuid.UUID:
    row_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox (id, type, envelope, created_at, published_at) VALUES "
        "(%s, 'device.status_changed', %s, now() - make_interval(days => %s), "
        "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => %s::float8 * 86400) END)",
        (row_id, Jsonb({"prune": "test"}), int(created_days_ago), published_days_ago, published_days_ago),
    )
    return row_id


async def test_prune_deletes_only_old_published_rows_and_old_event_ids(pool: Any) -> None:
    async with pool.connection() as conn:
        old_published = [await _outbox_row(conn, published_days_ago=8, created_days_ago=8) for _ in range(5)]
        recent_published = await _outbox_row(conn, published_days_ago=1, created_days_ago=1)
        old_unpublished = await _outbox_row(conn, published_days_ago=None, created_days_ago=30)
        old_event, new_event = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO processed_events (event_id, queue, processed_at) VALUES "
            "(%s, 'prune-test', now() - interval '8 days'), (%s, 'prune-test', now())",
            (old_event, new_event),
        )
    # bus is never used by prune(); a real (unconnected) EventBus keeps the types honest
    relay = OutboxRelay(pool, EventBus(RabbitSettings(), source="prune-test"), keep_days=7)
    try:
        deleted = await relay.prune(chunk=2)  # several chunks
        assert deleted >= 6  # our five old rows and the old event id (earlier tests' rows are younger)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM outbox WHERE id = ANY(%s)",
                ([*old_published, recent_published, old_unpublished],),
            )
            left = {r["id"] for r in await cur.fetchall()}
            assert left == {recent_published, old_unpublished}
            cur = await conn.execute(
                "SELECT event_id FROM processed_events WHERE event_id = ANY(%s)", ([old_event, new_event],)
            )
            assert {r["event_id"] for r in await cur.fetchall()} == {new_event}
        assert await relay.prune() == 0  # nothing else old enough
    finally:
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY(%s)", ([recent_published, old_unpublished],)
            )
            await conn.execute("DELETE FROM processed_events WHERE queue = 'prune-test'")
