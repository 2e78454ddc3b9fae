"""SQL of the telemetry read API: the device (or a site's devices) a query is about, in the caller's
org. The series themselves are in InfluxDB (telemetry/service.py)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]


async def device(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        "SELECT id, org_id, site_id, kind FROM devices WHERE org_id = %s AND id = %s", (org_id, device_id)
    )
    row: Row | None = await cur.fetchone()
    return row


async def site_exists(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM sites WHERE org_id = %s AND id = %s", (org_id, site_id))
    return await cur.fetchone() is not None


async def devices(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID | None, limit: int
) -> list[Row]:
    cur = await conn.execute(
        """SELECT id, site_id FROM devices WHERE org_id = %s AND (%s::uuid IS NULL OR site_id = %s)
           ORDER BY site_id, slug LIMIT %s""",
        (org_id, site_id, site_id, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return rows
