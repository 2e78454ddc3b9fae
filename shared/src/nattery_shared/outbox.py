"""Transactional outbox: an event is inserted in the same transaction as the change it describes and
published to RabbitMQ afterwards by :class:`OutboxRelay`, so a change is never stored without its event
(or the other way round), even when RabbitMQ is down or the process dies between commit and publish.

Delivery is at least once (a crash between publish and mark re-publishes); consumers dedupe by event id
(:mod:`nattery_shared.dedup`). Several replicas can relay at once: rows are claimed with
``FOR UPDATE SKIP LOCKED``.

Published rows (and, with ``prune_processed``, the ids of consumed events) are deleted after
``keep_days`` so neither table grows for ever; RabbitMQ redelivers within minutes, so a week of ids is
ample for de-duplication.

A service creates its table in a migration with :func:`create_outbox_table` (device's and integration's
existing migrations create the same table, with their own index names) and wires it as::

    OUTBOX = Outbox(event_source("trading"))               # enqueue(conn, type, data, subject=...)
    relay = OutboxRelay(pool, bus, keep_days=7)             # lifespan: spawn relay.run(); poke after commit
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, EventType, make_event, parse_event
from nattery_shared.dedup import PROCESSED_EVENTS, ProcessedEvents
from nattery_shared.rabbit import EventBus
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

TABLE = "outbox"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _checked(table: str) -> str:
    if not _IDENTIFIER.match(table):
        raise ValueError(f"not a plain lower-case table name: {table!r}")
    return table


def outbox_ddl(table: str = TABLE) -> str:
    """The outbox table, with partial indexes for the relay's claim and for the retention prune."""
    t = _checked(table)
    return (
        f"CREATE TABLE {t} (\n"
        "    id uuid PRIMARY KEY,\n"
        "    type text NOT NULL,\n"
        "    envelope jsonb NOT NULL,\n"
        "    created_at timestamptz NOT NULL DEFAULT now(),\n"
        "    published_at timestamptz\n"
        ");\n"
        f"CREATE INDEX {t}_unpublished ON {t} (created_at) WHERE published_at IS NULL;\n"
        f"CREATE INDEX {t}_published_at ON {t} (published_at) WHERE published_at IS NOT NULL;\n"
    )


def create_outbox_table(table: str = TABLE) -> None:
    """For a service's alembic migration: ``def upgrade() -> None: create_outbox_table()``."""
    from alembic import op  # only inside a migration run

    op.execute(outbox_ddl(table))


class Outbox:
    """Writes events into the outbox table, inside the caller's transaction."""

    def __init__(self, source: str, *, table: str = TABLE) -> None:
        self.source = source
        self._insert = sql.SQL("INSERT INTO {} (id, type, envelope) VALUES (%s, %s, %s)").format(
            sql.Identifier(_checked(table))
        )

    async def enqueue(
        self, conn: AsyncConnection[Any], event_type: EventType, data: Any, *, subject: str | None = None
    ) -> CloudEvent[Any]:
        """Store the event with the change ``conn``'s transaction makes; the relay publishes it after
        the commit (call the relay's ``poke()`` then, not to wait for its next poll)."""
        event = make_event(event_type, data, source=self.source, subject=subject)
        await conn.execute(self._insert, (event.id, event.type.value, Jsonb(event.model_dump(mode="json"))))
        return event


class OutboxRelay:
    """Publishes outbox rows in order of creation, marks them published, prunes old ones."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        bus: EventBus,
        *,
        table: str = TABLE,
        poll_s: float = 1.0,
        batch: int = 100,
        keep_days: float = 7.0,
        prune_every_s: float = 3600.0,
        prune_processed: ProcessedEvents | None = PROCESSED_EVENTS,
        backoff: Backoff | None = None,
    ) -> None:
        name = sql.Identifier(_checked(table))
        self._pool = pool
        self._bus = bus
        self._batch = batch
        self._keep_days = keep_days
        self._prune_every_s = prune_every_s
        self._prune_processed = prune_processed
        self._claim = sql.SQL(
            "SELECT id, envelope FROM {} WHERE published_at IS NULL "
            "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED"
        ).format(name)
        self._mark = sql.SQL("UPDATE {} SET published_at = now() WHERE id = %s").format(name)
        self._prune = sql.SQL(
            "DELETE FROM {0} WHERE id IN (SELECT id FROM {0} WHERE published_at IS NOT NULL "
            "AND published_at < now() - make_interval(secs => %s) LIMIT %s)"
        ).format(name)
        self._publish_loop = RetryLoop(
            self._publish_all,
            name=f"{table} relay",
            logger=log,
            every_s=poll_s,
            # RabbitMQ or PostgreSQL down: retry at the poll rate at first, backing off to 30 s.
            backoff=backoff or Backoff(initial_s=poll_s, max_s=max(poll_s, 30.0)),
        )
        self._prune_loop = RetryLoop(
            self.prune,
            name=f"{table} prune",
            logger=log,
            every_s=prune_every_s,
            backoff=Backoff(initial_s=min(60.0, prune_every_s), max_s=prune_every_s),
        )

    @property
    def failing(self) -> bool:
        return self._publish_loop.failing

    def poke(self) -> None:
        """Something was enqueued: publish now rather than at the next poll."""
        self._publish_loop.poke()

    def stop(self) -> None:
        """End :meth:`run` at its next turn, even if a client swallowed the task's cancellation."""
        self._publish_loop.stop()
        self._prune_loop.stop()

    async def run(self) -> None:
        """Publish until cancelled (or :meth:`stop`); prune every ``prune_every_s``."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._publish_loop.run(), name="outbox-publish")
            tasks.create_task(self._prune_loop.run(), name="outbox-prune")

    async def _publish_all(self) -> None:
        while await self.publish_pending() == self._batch:
            pass

    async def publish_pending(self) -> int:
        """Publish up to one batch of unpublished rows; returns how many there were."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(self._claim, (self._batch,))
            rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
            for row in rows:
                event: CloudEvent[Any] = parse_event(json.dumps(row["envelope"]))
                await self._bus.publish(event)
                await conn.execute(self._mark, (row["id"],))
            return len(rows)

    async def prune(self, *, chunk: int = 10_000) -> int:
        """Delete published rows (and consumed event ids) older than ``keep_days``.

        In chunks, each its own short transaction, so a large first prune never holds locks for long.
        Returns how many rows went.
        """
        older_than_s = self._keep_days * 86400
        deleted = 0
        while True:
            async with self._pool.connection() as conn:
                cur = await conn.execute(self._prune, (older_than_s, chunk))
            deleted += cur.rowcount
            if cur.rowcount < chunk:
                break
        if self._prune_processed is not None:
            deleted += await self._prune_processed.prune(self._pool, older_than_s=older_than_s, chunk=chunk)
        if deleted:
            log.info(
                "pruned %d outbox rows and consumed event ids older than %g days", deleted, self._keep_days
            )
        return deleted
