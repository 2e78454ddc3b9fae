"""Transactional outbox (as in device-service): events are inserted in the same transaction as the change
they describe and published to RabbitMQ afterwards by :class:`OutboxRelay`, so a change is never stored without its event (or the other way round), even when RabbitMQ is down.

Delivery is at least once (a crash between publish and mark re-publishes); consumers dedupe by event id.
Several replicas can relay at once: rows are claimed with ``FOR UPDATE SKIP LOCKED``.

Published rows, and the ids of events this service consumed (``processed_events``), are deleted after
``keep_days`` so neither table grows for ever; RabbitMQ redelivers within minutes, so a week of ids is
ample for deduplication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.aio import wait_event
from nattery_contracts.events import CloudEvent, EventType, make_event, parse_event
from nattery_integration.cancel import raise_if_cancelling
from nattery_shared.rabbit import EventBus

log = logging.getLogger(__name__)

SOURCE = "/services/integration"


async def enqueue(
    conn: AsyncConnection[Any], event_type: EventType, data: Any, *, subject: str | None = None
) -> None:
    event = make_event(event_type, data, source=SOURCE, subject=subject)
    await conn.execute(
        "INSERT INTO outbox (id, type, envelope) VALUES (%s, %s, %s)",
        (event.id, event.type.value, Jsonb(event.model_dump(mode="json"))),
    )


class OutboxRelay:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        bus: EventBus,
        *,
        poll_s: float = 1.0,
        batch: int = 100,
        keep_days: float = 7.0,
        prune_every_s: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._poll_s = poll_s
        self._batch = batch
        self._keep_days = keep_days
        self._prune_every_s = prune_every_s
        self._pruned_at = 0.0
        self._poke = asyncio.Event()
        self._failing = False
        self._stopping = False

    def stop(self) -> None:
        """End :meth:`run` at its next turn, even if a client swallowed the task's cancellation."""
        self._stopping = True
        self._poke.set()

    def poke(self) -> None:
        """Something was enqueued: publish now rather than at the next poll."""
        self._poke.set()

    async def run(self) -> None:
        while not self._stopping:
            # A client may have swallowed our cancellation mid-call (see cancel.py): stop anyway.
            raise_if_cancelling()
            try:
                while await self.publish_pending() == self._batch:
                    pass
                if time.monotonic() - self._pruned_at >= self._prune_every_s:
                    await self.prune()
                    self._pruned_at = time.monotonic()
                if self._failing:
                    log.info("outbox relay publishing again")
                    self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as err:
                raise_if_cancelling()
                if not self._failing:
                    log.warning("outbox relay cannot publish, will retry: %r", err)
                    self._failing = True
            await wait_event(self._poke, self._poll_s)
            self._poke.clear()

    async def publish_pending(self) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, envelope FROM outbox WHERE published_at IS NULL "
                "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (self._batch,),
            )
            rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
            for row in rows:
                event: CloudEvent[Any] = parse_event(json.dumps(row["envelope"]))
                await self._bus.publish(event)
                await conn.execute("UPDATE outbox SET published_at = now() WHERE id = %s", (row["id"],))
            return len(rows)

    async def prune(self, *, chunk: int = 10_000) -> int:
        """Delete published outbox rows and consumed event ids older than ``keep_days``.

        In chunks, each its own short transaction, so a large first prune never holds locks for long.
        Returns how many rows went.
        """
        deleted = 0
        statements = (
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at IS NOT NULL "
            "AND published_at < now() - make_interval(secs => %s) LIMIT %s)",
            "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events "
            "WHERE processed_at < now() - make_interval(secs => %s) LIMIT %s)",
        )
        for sql in statements:
            while True:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(sql, (self._keep_days * 86400, chunk))
                    deleted += cur.rowcount
                if cur.rowcount < chunk:
                    break
        if deleted:
            log.info(
                "pruned %d outbox rows and consumed event ids older than %g days", deleted, self._keep_days
            )
        return deleted
