"""SQL for the edge's events (faults, alarms, control notices): stored once per device, time and code."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

Row = dict[str, Any]


async def insert(
    conn: AsyncConnection[Any],
    *,
    org_id: uuid.UUID,
    site_id: uuid.UUID,
    device_id: uuid.UUID,
    ts: datetime,
    code: str,
    severity: str,
    message: str,
    details: dict[str, Any],
) -> bool:
    """True when stored; False for a redelivered event (same device, time and code)."""
    cur = await conn.execute(
        """INSERT INTO edge_events (org_id, site_id, device_id, ts, code, severity, message, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        (org_id, site_id, device_id, ts, code, severity, message, Jsonb(details)),
    )
    return cur.rowcount == 1


async def device_exists(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM devices WHERE org_id = %s AND id = %s", (org_id, device_id))
    return await cur.fetchone() is not None


async def for_device(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int,
) -> list[Row]:
    """Newest first, scoped by org."""
    cur = await conn.execute(
        """SELECT id, site_id, device_id, ts, code, severity, message, details, received_at
           FROM edge_events
           WHERE org_id = %s AND device_id = %s
             AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts < %s)
           ORDER BY ts DESC, id DESC LIMIT %s OFFSET %s""",
        (org_id, device_id, start, start, end, end, limit, offset),
    )
    rows: list[Row] = await cur.fetchall()
    return rows
