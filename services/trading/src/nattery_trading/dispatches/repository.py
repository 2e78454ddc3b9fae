"""SQL of dispatches (``dispatches``: a provider's instruction and trading's decision) and emergency
stops (``emergency_stops``: a site, or a whole org, held until released)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent
from nattery_trading import outbox


@dataclass(frozen=True)
class DispatchRow:
    dispatch_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    provider: str
    battery_power_kw: float
    start_at: datetime
    end_at: datetime
    status: str
    reason: str | None
    received_at: datetime


@dataclass(frozen=True)
class StopRow:
    stop_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID | None
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None


class DispatchRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # --- dispatches -----------------------------------------------------------------------------------
    async def insert(self, d: dict[str, Any], announcement: CloudEvent[Any] | None = None) -> bool:
        """Store a dispatch decision (False when already stored) and, in the same transaction, its
        announcement in the outbox."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO dispatches (dispatch_id, org_id, site_id, provider, battery_power_kw, start_at, "
                "end_at, status, reason) VALUES (%(dispatch_id)s, %(org_id)s, %(site_id)s, %(provider)s, "
                "%(battery_power_kw)s, %(start_at)s, %(end_at)s, %(status)s, %(reason)s) "
                "ON CONFLICT (dispatch_id) DO NOTHING RETURNING 1",
                d,
            )
            if await cur.fetchone() is None:
                return False
            if announcement is not None:
                await outbox.enqueue(conn, [announcement])
            return True

    async def finish(
        self, now: datetime, announce: Callable[[DispatchRow], CloudEvent[Any]] | None = None
    ) -> list[DispatchRow]:
        """Accepted dispatches whose window has passed become executed (returned once); with
        ``announce``, each one's announcement goes to the outbox in the same transaction."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=class_row(DispatchRow)) as cur,
        ):
            await cur.execute(
                "UPDATE dispatches SET status = 'executed' WHERE status = 'accepted' AND end_at <= %s RETURNING *",
                (now,),
            )
            rows = await cur.fetchall()
            if announce is not None:
                await outbox.enqueue(conn, [announce(r) for r in rows])
            return rows

    @staticmethod
    async def active_of_sites(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> dict[uuid.UUID, list[DispatchRow]]:
        """A plan batch's accepted dispatches overlapping ``[start, end)``, on its connection."""
        async with conn.cursor(row_factory=class_row(DispatchRow)) as cur:
            await cur.execute(
                "SELECT * FROM dispatches WHERE site_id = ANY(%s) AND status = 'accepted' AND end_at > %s "
                "AND start_at < %s ORDER BY site_id, start_at",
                (list(site_ids), start, end),
            )
            rows = await cur.fetchall()
        out: dict[uuid.UUID, list[DispatchRow]] = defaultdict(list)
        for r in rows:
            out[r.site_id].append(r)
        return out

    # --- emergency stops ------------------------------------------------------------------------------
    async def active_stop(self, org_id: uuid.UUID, site_id: uuid.UUID) -> StopRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StopRow)) as cur:
            await cur.execute(
                "SELECT * FROM emergency_stops WHERE org_id = %s AND released_at IS NULL AND "
                "(site_id IS NULL OR site_id = %s) ORDER BY created_at LIMIT 1",
                (org_id, site_id),
            )
            return await cur.fetchone()

    async def create_stop(
        self, org_id: uuid.UUID, site_id: uuid.UUID | None, reason: str, by: str
    ) -> StopRow:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StopRow)) as cur:
            await cur.execute(
                "INSERT INTO emergency_stops (stop_id, org_id, site_id, reason, created_by) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING *",
                (uuid.uuid4(), org_id, site_id, reason, by),
            )
            row = await cur.fetchone()
            assert row is not None
            return row

    async def release_stop(self, org_id: uuid.UUID, stop_id: uuid.UUID, by: str) -> StopRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StopRow)) as cur:
            await cur.execute(
                "UPDATE emergency_stops SET released_at = now(), released_by = %s WHERE stop_id = %s "
                "AND org_id = %s AND released_at IS NULL RETURNING *",
                (by, stop_id, org_id),
            )
            return await cur.fetchone()

    async def stops(self, org_id: uuid.UUID, active_only: bool) -> list[StopRow]:
        extra = " AND released_at IS NULL" if active_only else ""
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StopRow)) as cur:
            await cur.execute(
                f"SELECT * FROM emergency_stops WHERE org_id = %s{extra} ORDER BY created_at DESC", (org_id,)
            )
            return await cur.fetchall()

    @staticmethod
    async def active_stops_of(
        conn: AsyncConnection[Any], sites: Sequence[tuple[uuid.UUID, uuid.UUID]]
    ) -> dict[uuid.UUID, StopRow]:
        """The oldest active stop holding each (org, site) of a plan batch (its own or its org's)."""
        if not sites:
            return {}
        async with conn.cursor(row_factory=class_row(StopRow)) as cur:
            await cur.execute(
                "SELECT * FROM emergency_stops WHERE org_id = ANY(%s) AND released_at IS NULL ORDER BY created_at",
                (list({org for org, _ in sites}),),
            )
            rows = await cur.fetchall()
        out: dict[uuid.UUID, StopRow] = {}
        for org, site in sites:
            for stop in rows:
                if stop.org_id == org and stop.site_id in (None, site):
                    out[site] = stop
                    break
        return out
