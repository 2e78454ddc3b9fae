"""Trading's transactional outbox: announcements are stored in the transaction that makes the change
they announce (a schedule version, a dispatch's status) and published after the commit, so a crash
between commit and publish loses no event (issue 10).

The shared kit's outbox (``nattery_shared.outbox``: its table, relay loop, retry logging and prune), with
two things a fleet re-plan needs (bench-trading: 10,000 ``schedule.published`` for one price update):

- :func:`enqueue` stores many events with one COPY, their ids chosen by the caller (a schedule's
  announcement has an id derived from its job key, so a re-announcement keeps it);
  :func:`enqueue_again` stores events whose id may be stored already: the row becomes unpublished
  again and is announced once more.
- :class:`OutboxRelay` publishes a batch with its publisher confirms awaited together and marks it with
  one UPDATE (the kit's relay waits for each confirm and marks each row: one round trip each way per
  event). Whoever commits events calls :meth:`OutboxRelay.flush`; the service runs the relay's loop
  (``run``) for what that could not publish. :meth:`OutboxRelay.publish_held` publishes events the
  committer still holds (a re-plan job's announcements) without reading their envelopes back. Rows are claimed ``FOR UPDATE SKIP LOCKED``, so several
  processes relay at once; delivery is at least once, consumers dedupe by event id.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, parse_event
from nattery_shared import outbox as kit
from nattery_shared.rabbit import EventBus
from nattery_trading import outbox_repository
from nattery_trading.outbox_repository import enqueue, enqueue_again

__all__ = ["OutboxRelay", "enqueue", "enqueue_again"]

BATCH = 500


class OutboxRelay(kit.OutboxRelay):
    def __init__(self, pool: AsyncConnectionPool, bus: EventBus, *, batch: int = BATCH, **kw: Any) -> None:
        super().__init__(pool, bus, batch=batch, **kw)

    async def flush(self) -> int:
        """Publish every unpublished row now (after a commit); returns how many were published.
        Raises when RabbitMQ or PostgreSQL fails: the rows stay for the relay's loop."""
        total = 0
        while (n := await self.publish_pending()) > 0:
            total += n
            if n < self._batch:
                break
        return total

    async def publish_held(self, events: list[CloudEvent[Any]]) -> int:
        """Publish ``events``, just committed to the outbox, as the caller holds them: their rows are
        claimed by id (``FOR UPDATE SKIP LOCKED``, so the relay's loop never publishes them as well) and
        marked with one UPDATE, but their envelopes are not read back and parsed again (that was a
        fifth of the publish step of a fleet re-plan). Returns how many were published. Rows whose
        publish failed stay unpublished for the relay (and the first error is raised)."""
        if not events:
            return 0
        held = {e.id: e for e in events}
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            await cur.execute(outbox_repository.CLAIM_BY_ID, (list(held),))
            claimed: list[CloudEvent[Any]] = [held[row[0]] for row in await cur.fetchall()]
            if not claimed:
                return 0
            results = await asyncio.gather(*(self._bus.publish(e) for e in claimed), return_exceptions=True)
            done = [e.id for e, r in zip(claimed, results, strict=True) if r is None]
            if done:
                await outbox_repository.mark_published(cur, done)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        return len(done)

    async def publish_pending(self) -> int:
        """Publish up to one batch of unpublished rows, their confirms awaited together; returns how
        many there were. Rows whose publish failed stay unpublished (and the first error is raised)."""
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            await cur.execute(self._claim, (self._batch,))
            rows: list[tuple[uuid.UUID, Any]] = await cur.fetchall()
            if not rows:
                return 0
            events = [parse_event(json.dumps(envelope)) for _, envelope in rows]
            results = await asyncio.gather(*(self._bus.publish(e) for e in events), return_exceptions=True)
            done = [row[0] for row, r in zip(rows, results, strict=True) if r is None]
            if done:
                await outbox_repository.mark_published(cur, done)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        return len(rows)
