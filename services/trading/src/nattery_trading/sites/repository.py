"""SQL of the site registry (``registered_sites``, migration 0004): which org each site belongs to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class Outcome(StrEnum):
    """What one ``device.registered`` did to the registry (a label of the registrations metric)."""

    NEW = "new"  # the site's first event: registered to the event's org
    KNOWN = "known"  # already registered to that org (another device of the site, or a re-publish)
    CONFIRMED = "confirmed"  # a backfilled row, same org: now backed by an event
    CORRECTED = "corrected"  # a backfilled row of another org: moved to the event's org
    CONFLICT = "conflict"  # registered by an earlier event to another org: kept as it was
    DUPLICATE = "duplicate"  # this event id was already applied


@dataclass(frozen=True)
class Registration:
    outcome: Outcome
    org_id: uuid.UUID | None  # the org the site is registered to afterwards (None for a duplicate)
    previous_org_id: uuid.UUID | None = None  # for corrected and conflict: the org that was there


class SiteRegistry:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def org_of(self, site_id: uuid.UUID) -> uuid.UUID | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT org_id FROM registered_sites WHERE site_id = %s", (site_id,))
            row = await cur.fetchone()
        return None if row is None else uuid.UUID(str(row["org_id"]))

    async def processed(self, event_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM processed_events WHERE event_id = %s", (uuid.UUID(event_id),)
            )
            return await cur.fetchone() is not None

    async def record(
        self, *, event_id: uuid.UUID, queue: str, site_id: uuid.UUID, org_id: uuid.UUID
    ) -> Registration:
        """Apply one ``device.registered``: mark the event processed and register the site, in one
        transaction (a redelivery, even concurrent with the first delivery, changes nothing).

        A site registered by an event never moves to another org; a backfilled one (a claim made before
        trading checked sites) follows device-service, the owner of sites."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "INSERT INTO processed_events (event_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                "RETURNING 1",
                (event_id, queue),
            )
            if await cur.fetchone() is None:
                return Registration(Outcome.DUPLICATE, None)
            await cur.execute(
                "INSERT INTO registered_sites (site_id, org_id, source, event_id) VALUES (%s, %s, 'event', %s) "
                "ON CONFLICT (site_id) DO NOTHING RETURNING org_id",
                (site_id, org_id, event_id),
            )
            if await cur.fetchone() is not None:
                return Registration(Outcome.NEW, org_id)
            await cur.execute(
                "SELECT org_id, source FROM registered_sites WHERE site_id = %s FOR UPDATE", (site_id,)
            )
            row = await cur.fetchone()
            assert row is not None  # rows are never deleted
            current: uuid.UUID = row["org_id"]
            if row["source"] == "event":
                if current == org_id:
                    return Registration(Outcome.KNOWN, org_id)
                return Registration(Outcome.CONFLICT, current, current)
            await cur.execute(
                "UPDATE registered_sites SET org_id = %s, source = 'event', event_id = %s, updated_at = now() "
                "WHERE site_id = %s",
                (org_id, event_id, site_id),
            )
            if current == org_id:
                return Registration(Outcome.CONFIRMED, org_id)
            return Registration(Outcome.CORRECTED, org_id, current)
