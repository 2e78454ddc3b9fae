"""SQL for device status: a conditional update so that only a real change is recorded (and only by one
replica when several see the same signal)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]


async def change_status(
    conn: AsyncConnection[Any],
    device_id: uuid.UUID,
    status: str,
    reason: str,
    at: datetime,
    *,
    firmware: str | None = None,
    profile: str | None = None,
) -> str | bool | None:
    """Returns the previous status when it changed, ``False`` when it was already ``status``."""
    cur = await conn.execute(
        """WITH prev AS (SELECT id, status FROM devices WHERE id = %(id)s FOR UPDATE)
           UPDATE devices d SET status = %(status)s, status_reason = %(reason)s, status_at = %(at)s,
                  firmware = COALESCE(%(firmware)s, d.firmware), profile = COALESCE(%(profile)s, d.profile),
                  updated_at = now()
           FROM prev WHERE d.id = prev.id AND prev.status IS DISTINCT FROM %(status)s
           RETURNING prev.status AS previous""",
        {
            "id": device_id,
            "status": status,
            "reason": reason,
            "at": at,
            "firmware": firmware,
            "profile": profile,
        },
    )
    row: Row | None = await cur.fetchone()
    if row is None:
        if firmware is not None or profile is not None:
            await conn.execute(
                "UPDATE devices SET firmware = COALESCE(%s, firmware), profile = COALESCE(%s, profile) WHERE id = %s",
                (firmware, profile, device_id),
            )
        return False
    previous: str | None = row["previous"]
    return previous


async def record_change(
    conn: AsyncConnection[Any],
    device_id: uuid.UUID,
    org_id: uuid.UUID,
    previous: str | None,
    status: str,
    reason: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO device_status_changes (device_id, org_id, previous, status, reason, at) VALUES (%s, %s, %s, %s, %s, %s)",
        (device_id, org_id, previous, status, reason, at),
    )


async def statuses(conn: AsyncConnection[Any]) -> dict[uuid.UUID, str]:
    cur = await conn.execute("SELECT id, status FROM devices")
    return {r["id"]: r["status"] for r in await cur.fetchall()}


async def history(
    conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID, limit: int
) -> list[Row]:
    cur = await conn.execute(
        """SELECT previous, status, reason, at FROM device_status_changes
           WHERE org_id = %s AND device_id = %s ORDER BY at DESC, id DESC LIMIT %s""",
        (org_id, device_id, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return rows
