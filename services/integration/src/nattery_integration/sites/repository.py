"""SQL of the sites area: ``registered_sites`` (from device.registered) and ``pv_arrays``."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Row = dict[str, Any]

PV_FIELDS = (
    "latitude",
    "longitude",
    "altitude_m",
    "kwp",
    "tilt_deg",
    "azimuth_deg",
    "losses_pct",
    "inverter_kw",
)


class SitesRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def processed(self, event_id: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM processed_events WHERE event_id = %s", (uuid.UUID(event_id),)
            )
            return await cur.fetchone() is not None

    async def register(
        self, *, event_id: uuid.UUID, queue: str, site_id: uuid.UUID, org_id: uuid.UUID
    ) -> tuple[bool, uuid.UUID | None]:
        """Mark the event processed and register the site, in one transaction. Returns (applied, the
        org the site belongs to afterwards); applied is False for a redelivered event."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "INSERT INTO processed_events (event_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (event_id, queue),
            )
            if await cur.fetchone() is None:
                return False, None
            await cur.execute(
                "INSERT INTO registered_sites (site_id, org_id, event_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (site_id) DO NOTHING",
                (site_id, org_id, event_id),
            )
            await cur.execute("SELECT org_id FROM registered_sites WHERE site_id = %s", (site_id,))
            row = await cur.fetchone()
            return True, None if row is None else row["org_id"]

    async def org_of(self, site_id: uuid.UUID) -> uuid.UUID | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT org_id FROM registered_sites WHERE site_id = %s", (site_id,))
            row = await cur.fetchone()
        return None if row is None else uuid.UUID(str(row["org_id"]))

    async def put_pv_array(
        self, org_id: uuid.UUID, site_id: uuid.UUID, fields: dict[str, Any], by: str
    ) -> Row | None:
        """Upsert the site's array; None (nothing written) unless the site is registered to ``org_id``
        (the registry row is share-locked so its org cannot change before this commits)."""
        cols = ", ".join(PV_FIELDS)
        vals = ", ".join(f"%({f})s" for f in PV_FIELDS)
        sets = ", ".join(f"{f} = EXCLUDED.{f}" for f in PV_FIELDS)
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "SELECT 1 FROM registered_sites WHERE site_id = %s AND org_id = %s FOR SHARE",
                (site_id, org_id),
            )
            if await cur.fetchone() is None:
                return None
            await cur.execute(
                f"INSERT INTO pv_arrays (site_id, org_id, {cols}, updated_by) VALUES (%(site_id)s, %(org_id)s, "
                f"{vals}, %(by)s) ON CONFLICT (site_id) DO UPDATE SET {sets}, updated_by = EXCLUDED.updated_by, "
                "updated_at = now() RETURNING *",
                {**fields, "site_id": site_id, "org_id": org_id, "by": by},
            )
            return await cur.fetchone()

    async def get_pv_array(self, org_id: uuid.UUID, site_id: uuid.UUID) -> Row | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT p.* FROM pv_arrays p JOIN registered_sites r ON r.site_id = p.site_id AND r.org_id = p.org_id "
                "WHERE p.site_id = %s AND p.org_id = %s",
                (site_id, org_id),
            )
            return await cur.fetchone()

    async def pv_arrays(self) -> list[Row]:
        """Every configured array of a registered site (the weather job's work list)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT p.* FROM pv_arrays p JOIN registered_sites r ON r.site_id = p.site_id AND r.org_id = p.org_id "
                "ORDER BY p.site_id"
            )
            return await cur.fetchall()
