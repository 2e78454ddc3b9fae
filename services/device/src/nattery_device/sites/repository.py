"""SQL for sites. Every query that serves an API caller is scoped by ``org_id``."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from nattery_shared.errors import Conflict

_COLUMNS = (
    "id, org_id, slug, name, location, latitude, longitude, timezone, safety_limits, "
    "mqtt_revoked_at IS NOT NULL AS mqtt_revoked, created_at, updated_at"
)

Row = dict[str, Any]


async def insert(
    conn: AsyncConnection[Any], org_id: uuid.UUID, values: dict[str, Any], *, password_hash: str
) -> Row:
    try:
        cur = await conn.execute(
            f"""INSERT INTO sites (id, org_id, slug, name, location, latitude, longitude, timezone, safety_limits,
                                   mqtt_password_hash)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (
                uuid.uuid4(),
                org_id,
                values["slug"],
                values["name"],
                values.get("location"),
                values.get("latitude"),
                values.get("longitude"),
                values["timezone"],
                Jsonb(values["safety_limits"]),
                password_hash,
            ),
        )
    except UniqueViolation as err:
        raise Conflict(f"site slug {values['slug']!r} is taken") from err
    row: Row | None = await cur.fetchone()
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM sites WHERE org_id = %s AND id = %s", (org_id, site_id))
    row: Row | None = await cur.fetchone()
    return row


async def list_for_org(
    conn: AsyncConnection[Any], org_id: uuid.UUID, *, limit: int, offset: int
) -> list[Row]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM sites WHERE org_id = %s ORDER BY slug LIMIT %s OFFSET %s",
        (org_id, limit, offset),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def update(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID, changes: dict[str, Any]
) -> Row | None:
    allowed = ("name", "location", "latitude", "longitude", "timezone", "safety_limits")
    sets = [f"{k} = %s" for k in allowed if k in changes]
    params = [Jsonb(changes[k]) if k == "safety_limits" else changes[k] for k in allowed if k in changes]
    if not sets:
        return await get(conn, org_id, site_id)
    cur = await conn.execute(
        f"UPDATE sites SET {', '.join(sets)}, updated_at = now() WHERE org_id = %s AND id = %s RETURNING {_COLUMNS}",
        (*params, org_id, site_id),
    )
    row: Row | None = await cur.fetchone()
    return row


async def set_revoked(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    site_id: uuid.UUID,
    revoked: bool,
    *,
    password_hash: str | None = None,
) -> Row | None:
    cur = await conn.execute(
        f"""UPDATE sites SET mqtt_revoked_at = CASE WHEN %s THEN now() ELSE NULL END,
                   mqtt_password_hash = COALESCE(%s, mqtt_password_hash), updated_at = now()
            WHERE org_id = %s AND id = %s RETURNING {_COLUMNS}""",
        (revoked, password_hash, org_id, site_id),
    )
    row: Row | None = await cur.fetchone()
    return row


async def credentials(conn: AsyncConnection[Any]) -> tuple[dict[str, str], set[str]]:
    """Every site's MQTT username: active ones with their hash, and the revoked ones."""
    cur = await conn.execute(
        "SELECT slug, mqtt_password_hash, mqtt_revoked_at IS NOT NULL AS revoked FROM sites"
    )
    active: dict[str, str] = {}
    inactive: set[str] = set()
    for row in await cur.fetchall():
        if row["revoked"] or row["mqtt_password_hash"] is None:
            inactive.add(row["slug"])
        else:
            active[row["slug"]] = row["mqtt_password_hash"]
    return active, inactive


async def delete(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        f"DELETE FROM sites WHERE org_id = %s AND id = %s RETURNING {_COLUMNS}", (org_id, site_id)
    )
    row: Row | None = await cur.fetchone()
    return row
