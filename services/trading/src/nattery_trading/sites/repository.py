"""SQL of sites: the registry (``registered_sites``, migration 0004: which org each site belongs to)
and their battery configurations (``sites``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from nattery_shared.dedup import PROCESSED_EVENTS


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
            return await PROCESSED_EVENTS.seen(conn, event_id)

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
            if not await PROCESSED_EVENTS.mark(conn, event_id, queue):
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


@dataclass(frozen=True)
class SiteConfig:
    """A configured site (``sites``): battery, grid limits, the last SOC posted through the API."""

    site_id: uuid.UUID
    org_id: uuid.UUID
    timezone: str
    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float
    discharge_efficiency: float
    soc_min_pct: float
    soc_max_pct: float
    degradation_p_per_kwh: float
    import_limit_kw: float | None
    export_limit_kw: float | None
    soc_pct: float | None
    soc_at: datetime | None
    updated_at: datetime


# ``sites s`` limited to configurations made by the org the site is registered to.
REGISTERED_SITES = "sites s JOIN registered_sites r ON r.site_id = s.site_id AND r.org_id = s.org_id"
_CONFIG = ", ".join(f"s.{f.name}" for f in fields(SiteConfig))
BATTERY_FIELDS = (
    "timezone",
    "capacity_kwh",
    "max_charge_kw",
    "max_discharge_kw",
    "charge_efficiency",
    "discharge_efficiency",
    "soc_min_pct",
    "soc_max_pct",
    "degradation_p_per_kwh",
    "import_limit_kw",
    "export_limit_kw",
)


class SiteRepository:
    """SQL of configured sites (``sites``): served and planned only while registered to the org that
    configured them (a configuration left by another org, see README "Sites and orgs", is neither)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def upsert(
        self, org_id: uuid.UUID, site_id: uuid.UUID, battery: dict[str, Any]
    ) -> SiteConfig | None:
        """Configure a site's battery; None (nothing written) unless the site is registered to ``org_id``
        and not configured by another org. The registry row is share-locked so its org cannot change
        before this commits."""
        cols = ", ".join(BATTERY_FIELDS)
        vals = ", ".join(f"%({f})s" for f in BATTERY_FIELDS)
        sets = ", ".join(f"{f} = EXCLUDED.{f}" for f in BATTERY_FIELDS)
        async with self.pool.connection() as conn, conn.transaction():
            registered = await conn.execute(
                "SELECT 1 FROM registered_sites WHERE site_id = %s AND org_id = %s FOR SHARE",
                (site_id, org_id),
            )
            if await registered.fetchone() is None:
                return None
            cur = conn.cursor(row_factory=class_row(SiteConfig))
            await cur.execute(
                f"INSERT INTO sites AS s (site_id, org_id, {cols}) VALUES (%(site_id)s, %(org_id)s, {vals}) "
                f"ON CONFLICT (site_id) DO UPDATE SET {sets}, updated_at = now() "
                f"WHERE s.org_id = EXCLUDED.org_id RETURNING {_CONFIG}",
                {"site_id": site_id, "org_id": org_id, **battery},
            )
            return await cur.fetchone()

    async def get(self, site_id: uuid.UUID) -> SiteConfig | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(SiteConfig)) as cur:
            await cur.execute(f"SELECT {_CONFIG} FROM {REGISTERED_SITES} WHERE s.site_id = %s", (site_id,))
            return await cur.fetchone()

    async def set_soc(self, site_id: uuid.UUID, soc_pct: float, at: datetime) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE sites SET soc_pct = %s, soc_at = %s WHERE site_id = %s", (soc_pct, at, site_id)
            )

    async def of_org(self, org_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(f"SELECT s.site_id FROM {REGISTERED_SITES} WHERE s.org_id = %s", (org_id,))
            return [r[0] for r in await cur.fetchall()]

    @staticmethod
    async def many(conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SiteConfig]:
        """Configured sites of a plan batch, on the batch's connection."""
        async with conn.cursor(row_factory=class_row(SiteConfig)) as cur:
            await cur.execute(
                f"SELECT {_CONFIG} FROM {REGISTERED_SITES} WHERE s.site_id = ANY(%s)", (list(site_ids),)
            )
            return {r.site_id: r for r in await cur.fetchall()}
