"""Group commit of inbound deliveries: the rows of concurrent requests go to PostgreSQL in one INSERT.

At a few hundred deliveries per second, one INSERT per request spent most of the event loop in
psycopg's per-statement work. Here a request queues its row and waits for the commit of the batch
holding it; the batch is sent at the next turn of the event loop, at most ``max_in_flight`` batches
at a time (so under light load a row goes alone and at once, under heavy load the rows that arrive
during a commit go together in the next one). Each batch is one statement committed on its own
(autocommit), so "stored" means committed before any request of it is answered 200. If the statement
fails, every request of the batch gets :class:`StoreUnavailable` (503): never a 200 without storage.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from nattery_integration.webhooks import repository
from nattery_shared.errors import NatteryError

log = logging.getLogger(__name__)


class StoreUnavailable(NatteryError):
    status_code = 503
    code = "webhook_store_unavailable"


@dataclass
class _Row:
    provider: str
    delivery_id: str
    signed_at: datetime
    body: bytes
    # True once committed as a new row, False when already stored (a replay)
    stored: asyncio.Future[bool] = field(
        repr=False, default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class DeliveryBatcher:
    def __init__(self, pool: AsyncConnectionPool, *, max_in_flight: int = 2, max_rows: int = 256) -> None:
        self.pool = pool
        self._max_in_flight = max_in_flight
        self._max_rows = max_rows
        self._queue: list[_Row] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while a batch is written

    async def store(self, provider: str, delivery_id: str, signed_at: datetime, body: bytes) -> bool:
        """Once committed: True when stored now, False when this delivery was already stored."""
        row = _Row(provider, delivery_id, signed_at, body)
        self._queue.append(row)
        if not self._scheduled:  # the requests ready in this turn of the loop join the same batch
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_batches)
        return await row.stored

    def _send_batches(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            batch, self._queue = self._queue[: self._max_rows], self._queue[self._max_rows :]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._write(batch), name="webhook-store")
            self._tasks.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._queue and not self._scheduled:
            self._send_batches()

    async def _write(self, batch: list[_Row]) -> None:
        # A delivery id twice in one batch (a provider's quick retry): one row sent; the first request
        # is the one stored, the other is its replay.
        first: dict[tuple[str, str], _Row] = {}
        for row in batch:
            first.setdefault((row.provider, row.delivery_id), row)
        try:
            async with self.pool.connection() as conn:
                # One statement committed on its own: one round trip (no BEGIN/COMMIT); as durable.
                await conn.set_autocommit(True)
                try:
                    # in key order: two batches holding the same retried ids lock them in the same
                    # order, so they cannot deadlock
                    new = await repository.store_many(
                        conn, [(*key, r.signed_at, r.body) for key, r in sorted(first.items())]
                    )
                finally:
                    await conn.set_autocommit(False)  # the pool's other users expect transactions
        except BaseException as err:
            if isinstance(err, Exception):
                log.warning("cannot store %d webhook deliveries: %r", len(batch), err)
            for row in batch:
                if not row.stored.done():  # (a request whose client left was cancelled)
                    row.stored.set_exception(StoreUnavailable("webhook delivery not stored, retry later"))
            if not isinstance(err, Exception):
                raise  # cancelled (shutdown): the requests were answered 503 above
            return
        for row in batch:
            key = (row.provider, row.delivery_id)
            if not row.stored.done():
                row.stored.set_result(first[key] is row and key in new)
