"""Consumed-event de-duplication: consumers are idempotent by CloudEvent id (ARCHITECTURE §5).

Each service keeps the ids of the events it applied in its own ``processed_events`` table (one per
schema). Two ways to use it:

- Apply and mark in one transaction (exactly-once effect, even for concurrent redeliveries)::

      async with pool.connection() as conn, conn.transaction():
          if not await PROCESSED_EVENTS.mark(conn, event.id, queue):
              return  # a redelivery: already applied
          ...  # the change, same transaction

- For a handler that is idempotent anyway: let the bus skip ids already marked, and mark after the
  handler succeeded::

      await bus.consume(spec, PROCESSED_EVENTS.marking(pool, spec.name, handler),
                        already_handled=PROCESSED_EVENTS.checker(pool))

The table is created by a migration of the service. A new service (or a second table) calls
:func:`create_processed_events_table` from its migration; the existing ``0001_processed_events``
migrations stay as history and create exactly the same table (a test pins the DDL to theirs).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent

log = logging.getLogger(__name__)

TABLE = "processed_events"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

EventHandler = Callable[[CloudEvent[Any]], Awaitable[None]]


def _checked(table: str) -> str:
    if not _IDENTIFIER.match(table):
        raise ValueError(f"not a plain lower-case table name: {table!r}")
    return table


def processed_events_ddl(table: str = TABLE) -> str:
    """The ``CREATE TABLE`` (and its index, for the retention prune) of a processed-events table."""
    t = _checked(table)
    return (
        f"CREATE TABLE {t} (\n"
        "    event_id uuid PRIMARY KEY,\n"
        "    queue text NOT NULL,\n"
        "    processed_at timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
        f"CREATE INDEX {t}_processed_at ON {t} (processed_at);\n"
    )


def create_processed_events_table(table: str = TABLE) -> None:
    """For a service's alembic migration: ``def upgrade() -> None: create_processed_events_table()``."""
    from alembic import op  # only inside a migration run

    op.execute(processed_events_ddl(table))


def _uuid(event_id: str | uuid.UUID) -> uuid.UUID:
    return event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(event_id)


class ProcessedEvents:
    """The ids of consumed events in one table of the service's schema (``search_path``)."""

    def __init__(self, table: str = TABLE) -> None:
        name = sql.Identifier(_checked(table))
        self.table = table
        self._seen = sql.SQL("SELECT 1 FROM {} WHERE event_id = %s").format(name)
        self._mark = sql.SQL(
            "INSERT INTO {} (event_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1"
        ).format(name)
        self._prune = sql.SQL(
            "DELETE FROM {0} WHERE event_id IN (SELECT event_id FROM {0} "
            "WHERE processed_at < now() - make_interval(secs => %s) LIMIT %s)"
        ).format(name)

    async def seen(self, conn: AsyncConnection[Any], event_id: str | uuid.UUID) -> bool:
        cur = await conn.execute(self._seen, (_uuid(event_id),))
        return await cur.fetchone() is not None

    async def mark(self, conn: AsyncConnection[Any], event_id: str | uuid.UUID, queue: str) -> bool:
        """Mark the event processed; True the first time, False for an id already marked.

        Inside the caller's transaction, a concurrent redelivery waits on the row lock and then gets
        False, so "mark, then apply" in one transaction applies an event once.
        """
        cur = await conn.execute(self._mark, (_uuid(event_id), queue))
        return await cur.fetchone() is not None

    def checker(self, pool: AsyncConnectionPool) -> Callable[[str], Awaitable[bool]]:
        """``already_handled`` for :meth:`nattery_shared.rabbit.EventBus.consume`."""

        async def already_handled(event_id: str) -> bool:
            async with pool.connection() as conn:
                return await self.seen(conn, event_id)

        return already_handled

    def marking(self, pool: AsyncConnectionPool, queue: str, handler: EventHandler) -> EventHandler:
        """``handler``, then mark the event processed (its own transaction, after the handler's)."""

        async def handle_then_mark(event: CloudEvent[Any]) -> None:
            await handler(event)
            async with pool.connection() as conn:
                await self.mark(conn, event.id, queue)

        return handle_then_mark

    async def prune(self, pool: AsyncConnectionPool, *, older_than_s: float, chunk: int = 10_000) -> int:
        """Delete ids marked more than ``older_than_s`` ago, in chunks (each its own short
        transaction, so a large first prune never holds locks for long). Returns how many went."""
        deleted = 0
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(self._prune, (older_than_s, chunk))
            deleted += cur.rowcount
            if cur.rowcount < chunk:
                return deleted


PROCESSED_EVENTS = ProcessedEvents()
