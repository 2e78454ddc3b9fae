"""Consumed-event de-duplication against real PostgreSQL: mark once, concurrent redeliveries, the bus
hooks, the prune, and the DDL pinned to the services' existing ``0001_processed_events`` migrations."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nattery_contracts.events import CloudEvent
from nattery_shared.dedup import PROCESSED_EVENTS, ProcessedEvents, processed_events_ddl

ROOT = Path(__file__).resolve().parents[2]


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("( ", "(").replace(" )", ")").strip()


def test_ddl_is_the_one_every_service_migration_created() -> None:
    """Existing migrations stay as history; the helper must create exactly the same table."""
    migrations = sorted(ROOT.glob("services/*/src/*/migrations/versions/0001_processed_events.py"))
    assert len(migrations) >= 5
    for path in migrations:
        body = re.search(r'op\.execute\(\s*"""(.*?)"""', path.read_text(), re.S)
        assert body is not None, path
        assert _normalised(body.group(1)) == _normalised(processed_events_ddl()), path


def test_table_names_are_identifiers_only() -> None:
    for bad in ("processed_events; DROP TABLE x", "Processed", "a-b", ""):
        with pytest.raises(ValueError):
            ProcessedEvents(bad)
        with pytest.raises(ValueError):
            processed_events_ddl(bad)


async def _create(pool: Any, table: str = "processed_events") -> None:
    async with pool.connection() as conn:
        await conn.execute(processed_events_ddl(table))


async def test_mark_is_true_once_and_seen_after(scratch_pool: Any) -> None:
    await _create(scratch_pool)
    event_id = uuid.uuid4()
    async with scratch_pool.connection() as conn:
        assert not await PROCESSED_EVENTS.seen(conn, event_id)
        assert await PROCESSED_EVENTS.mark(conn, event_id, "test.queue") is True
        assert await PROCESSED_EVENTS.mark(conn, str(event_id), "test.queue") is False
        assert await PROCESSED_EVENTS.seen(conn, str(event_id))


async def test_concurrent_redeliveries_apply_once(scratch_pool: Any) -> None:
    """Mark-then-apply in one transaction: of two concurrent deliveries exactly one applies."""
    await _create(scratch_pool)
    event_id = uuid.uuid4()
    both_marked = asyncio.Barrier(2)
    first_marked = asyncio.Event()

    async def deliver(first: bool) -> bool:
        async with scratch_pool.connection() as conn, conn.transaction():
            if first:
                applied = await PROCESSED_EVENTS.mark(conn, event_id, "q")
                first_marked.set()
                await both_marked.wait()  # hold the transaction open while the other one tries
                return applied
            await first_marked.wait()
            mark = asyncio.create_task(PROCESSED_EVENTS.mark(conn, event_id, "q"))  # blocks on the lock
            await both_marked.wait()
            return await mark

    results = await asyncio.wait_for(asyncio.gather(deliver(True), deliver(False)), 20)
    assert sorted(results) == [False, True]


async def test_checker_and_marking_hooks_for_the_bus(scratch_pool: Any) -> None:
    table = "consumed_events"  # a second table name works the same
    await _create(scratch_pool, table)
    events = ProcessedEvents(table)
    handled: list[uuid.UUID] = []

    async def handler(event: CloudEvent[Any]) -> None:
        handled.append(event.id)

    event = CloudEvent[Any](type="alert.resolved", source="/tests/kit", data={})
    already_handled = events.checker(scratch_pool)
    assert not await already_handled(str(event.id))
    await events.marking(scratch_pool, "test.queue", handler)(event)
    assert handled == [event.id]
    assert await already_handled(str(event.id))


async def test_failed_handler_does_not_mark(scratch_pool: Any) -> None:
    await _create(scratch_pool)

    async def broken(event: CloudEvent[Any]) -> None:
        raise RuntimeError("handler failed")

    event = CloudEvent[Any](type="alert.resolved", source="/tests/kit", data={})
    with pytest.raises(RuntimeError):
        await PROCESSED_EVENTS.marking(scratch_pool, "q", broken)(event)
    assert not await PROCESSED_EVENTS.checker(scratch_pool)(str(event.id))  # redelivery will retry it


async def test_prune_deletes_old_ids_only(scratch_pool: Any) -> None:
    await _create(scratch_pool)
    old = [uuid.uuid4() for _ in range(5)]
    new = uuid.uuid4()
    async with scratch_pool.connection() as conn:
        for event_id in old:
            await conn.execute(
                "INSERT INTO processed_events (event_id, queue, processed_at) "
                "VALUES (%s, 'q', now() - interval '8 days')",
                (event_id,),
            )
        await PROCESSED_EVENTS.mark(conn, new, "q")
    assert await PROCESSED_EVENTS.prune(scratch_pool, older_than_s=7 * 86400, chunk=2) == 5
    async with scratch_pool.connection() as conn:
        cur = await conn.execute("SELECT event_id FROM processed_events")
        assert [r["event_id"] for r in await cur.fetchall()] == [new]


def test_a_new_service_migration_creates_both_tables_with_the_helpers(
    scratch_schema: str, tmp_path: Path
) -> None:
    """What analytics or alerts writes in its first migration, run by the kit's alembic runner."""
    from nattery_shared import migrations
    from nattery_shared.testing import TEST_PG_DSN

    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text("from nattery_shared.migrations import run_env\n\nrun_env()\n")
    (tmp_path / "versions" / "0001_kit.py").write_text(
        'revision = "0001"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n"
        "    from nattery_shared.dedup import create_processed_events_table\n"
        "    from nattery_shared.outbox import create_outbox_table\n\n"
        "    create_processed_events_table()\n"
        "    create_outbox_table()\n"
    )
    migrations.upgrade(tmp_path, TEST_PG_DSN, scratch_schema)
    assert migrations.current_revision(tmp_path, TEST_PG_DSN, scratch_schema) == "0001"
    with psycopg.connect(TEST_PG_DSN) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (scratch_schema,)
            )
        }
    assert {"processed_events", "outbox", "alembic_version"} <= tables
