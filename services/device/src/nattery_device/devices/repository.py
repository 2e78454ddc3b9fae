"""SQL for devices; API queries are scoped by ``org_id``."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from nattery_shared.errors import Conflict

Row = dict[str, Any]

_SELECT = """
    SELECT d.id, d.org_id, d.site_id, s.slug AS site_slug, d.slug, d.kind, d.profile, d.serial,
           d.meter_category, d.status, d.status_reason, d.status_at, d.firmware, d.created_at, d.updated_at
    FROM devices d JOIN sites s ON s.id = d.site_id
"""


async def insert(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID, values: dict[str, Any]
) -> Row:
    device_id = uuid.uuid4()
    try:
        await conn.execute(
            """INSERT INTO devices (id, org_id, site_id, slug, kind, profile, serial, meter_category)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                device_id,
                org_id,
                site_id,
                values["slug"],
                values["kind"],
                values.get("profile"),
                values.get("serial"),
                values.get("meter_category"),
            ),
        )
    except UniqueViolation as err:
        raise Conflict(f"device slug {values['slug']!r} already exists on this site") from err
    row = await get(conn, org_id, device_id)
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(f"{_SELECT} WHERE d.org_id = %s AND d.id = %s", (org_id, device_id))
    row: Row | None = await cur.fetchone()
    return row


async def list_for_org(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    *,
    site_id: uuid.UUID | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> list[Row]:
    cur = await conn.execute(
        f"""{_SELECT} WHERE d.org_id = %s AND (%s::uuid IS NULL OR d.site_id = %s)
            AND (%s::text IS NULL OR d.kind = %s) ORDER BY s.slug, d.slug LIMIT %s OFFSET %s""",
        (org_id, site_id, site_id, kind, kind, limit, offset),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def update(
    conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID, changes: dict[str, Any]
) -> Row | None:
    allowed = ("profile", "serial", "meter_category")
    sets = [f"{k} = %s" for k in allowed if k in changes]
    if sets:
        await conn.execute(
            f"UPDATE devices SET {', '.join(sets)}, updated_at = now() WHERE org_id = %s AND id = %s",
            (*[changes[k] for k in allowed if k in changes], org_id, device_id),
        )
    return await get(conn, org_id, device_id)


async def delete(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM devices WHERE org_id = %s AND id = %s", (org_id, device_id))
    return cur.rowcount > 0


async def registry_rows(conn: AsyncConnection[Any]) -> list[Row]:
    """Every site with its devices (one row per device; a site without devices once, device columns
    NULL): the ingest path's slug -> id view (devices/registry.py)."""
    cur = await conn.execute(
        """SELECT s.id AS site_id, s.org_id, s.slug AS site_slug, s.mqtt_revoked_at IS NOT NULL AS revoked,
                  d.id AS device_id, d.slug AS device_slug, d.kind
           FROM sites s LEFT JOIN devices d ON d.site_id = s.id"""
    )
    rows: list[Row] = await cur.fetchall()
    return rows
