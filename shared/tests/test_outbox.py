"""The transactional outbox against real PostgreSQL and RabbitMQ: an event exists only if its
transaction committed, the relay publishes it (in order, once marked), and prunes what is old."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import psycopg
import pytest
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from nattery_contracts.events import AlertResolved, CloudEvent, EventType
from nattery_shared.dedup import PROCESSED_EVENTS, processed_events_ddl
from nattery_shared.outbox import Outbox, OutboxRelay, outbox_ddl
from nattery_shared.rabbit import EventBus, QueueSpec, event_source
from nattery_shared.settings import RabbitSettings
from nattery_shared.testing import TEST_PG_DSN, TEST_RABBIT_URL, eventually

SETTINGS = RabbitSettings(url=SecretStr(TEST_RABBIT_URL), delivery_limit=2)


def alert() -> AlertResolved:
    return AlertResolved(
        alert_id=uuid.uuid4(), org_id=uuid.uuid4(), site_id=uuid.uuid4(), at=datetime.now(UTC)
    )


@pytest.fixture
async def tables(scratch_pool: Any) -> Any:
    async with scratch_pool.connection() as conn:
        await conn.execute(outbox_ddl())
        await conn.execute(processed_events_ddl())
    return scratch_pool


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    b = EventBus(SETTINGS, source=event_source("kit-test"))
    b.start()
    await b.wait_connected(15)
    yield b
    await b.close()


def _columns(schema: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(TEST_PG_DSN) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'outbox'",
            (schema,),
        ).fetchall()
    return set(rows)


async def test_ddl_matches_the_outbox_device_service_already_has(tables: Any, scratch_schema: str) -> None:
    """device's table (migrated at session start) and the kit's are the same columns."""
    assert _columns(scratch_schema) == _columns("device") != set()


async def test_event_exists_only_if_its_transaction_committed(tables: Any) -> None:
    outbox = Outbox(event_source("kit-test"))
    with pytest.raises(RuntimeError):
        async with tables.connection() as conn, conn.transaction():
            await outbox.enqueue(conn, EventType.ALERT_RESOLVED, alert())
            raise RuntimeError("the change failed")
    async with tables.connection() as conn, conn.transaction():
        event = await outbox.enqueue(conn, EventType.ALERT_RESOLVED, alert(), subject="site-1")
    async with tables.connection() as conn:
        cur = await conn.execute("SELECT id, type, envelope FROM outbox")
        rows = await cur.fetchall()
    assert [(r["id"], r["type"]) for r in rows] == [(event.id, "alert.resolved")]
    assert rows[0]["envelope"]["source"] == "/services/kit-test"
    assert rows[0]["envelope"]["subject"] == "site-1"


async def test_relay_publishes_in_order_and_marks_published(tables: Any, bus: EventBus) -> None:
    queue = f"kit.outbox-{uuid.uuid4().hex[:8]}"
    received: asyncio.Queue[CloudEvent[Any]] = asyncio.Queue()

    async def handler(event: CloudEvent[Any]) -> None:
        if event.source == "/services/kit-test":
            await received.put(event)

    await bus.consume(QueueSpec(queue, [EventType.ALERT_RESOLVED.value]), handler)
    outbox = Outbox(event_source("kit-test"))
    relay = OutboxRelay(tables, bus, poll_s=3600, batch=2)  # only pokes publish: 5 rows = 3 batches
    task = asyncio.create_task(relay.run())
    try:
        sent = []
        async with tables.connection() as conn, conn.transaction():
            for _ in range(5):
                sent.append((await outbox.enqueue(conn, EventType.ALERT_RESOLVED, alert())).id)
        relay.poke()
        got = [(await asyncio.wait_for(received.get(), 15)).id for _ in sent]
        assert got == sent

        async def all_marked() -> bool:  # the batch's marks commit after its publishes are confirmed
            async with tables.connection() as conn:
                cur = await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                return bool((await cur.fetchone())["n"] == 0)

        await eventually(all_marked, 15)
        relay.stop()
        await asyncio.wait_for(task, 15)  # stop() ends run() even while it waits for the next poll
    finally:
        task.cancel()
        connection = await aio_pika.connect(TEST_RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dlq")


async def test_prune_deletes_only_old_published_rows_and_old_event_ids(tables: Any, bus: EventBus) -> None:
    async def row(published_days_ago: float | None, created_days_ago: float) -> uuid.UUID:
        row_id = uuid.uuid4()
        async with tables.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox (id, type, envelope, created_at, published_at) VALUES "
                "(%s, 'alert.resolved', %s, now() - make_interval(days => %s), "
                "now() - make_interval(secs => %s::float8 * 86400))",
                (row_id, Jsonb({}), int(created_days_ago), published_days_ago),
            )
        return row_id

    old_published = [await row(8, 8) for _ in range(5)]
    recent_published = await row(1, 1)
    old_unpublished = await row(None, 30)
    async with tables.connection() as conn:
        await conn.execute(
            "INSERT INTO processed_events (event_id, queue, processed_at) VALUES "
            "(%s, 'q', now() - interval '8 days')",
            (uuid.uuid4(),),
        )
        await PROCESSED_EVENTS.mark(conn, uuid.uuid4(), "q")
    relay = OutboxRelay(tables, bus, keep_days=7)
    assert await relay.prune(chunk=2) == 6  # five rows in three chunks, and one event id
    async with tables.connection() as conn:
        cur = await conn.execute("SELECT id FROM outbox")
        left = {r["id"] for r in await cur.fetchall()}
        cur = await conn.execute("SELECT count(*) AS n FROM processed_events")
        assert (await cur.fetchone())["n"] == 1
    assert left == {recent_published, old_unpublished}
    assert not set(old_published) & left
    assert await relay.prune() == 0


def test_outbox_table_names_are_identifiers_only() -> None:
    with pytest.raises(ValueError):
        Outbox("/services/x", table="outbox; DROP TABLE y")
    with pytest.raises(ValueError):
        outbox_ddl("Outbox")
