"""SQL for HTTP ingest gateways. Admin queries are scoped by ``org_id``; the ingest path finds a
gateway by the hash of the key it presented."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row, scalar_row

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_COLUMNS = (
    "id, org_id, name, site_ids, allowed_cidrs, key_hint, created_at, rotated_at, revoked_at, "
    "last_used_at, previous_key_valid_until"
)


@dataclass(frozen=True, slots=True)
class GatewayRow:
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    site_ids: list[uuid.UUID]
    allowed_cidrs: list[Network]
    key_hint: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    previous_key_valid_until: datetime | None


async def insert(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    *,
    name: str,
    site_ids: list[uuid.UUID],
    allowed_cidrs: list[Network],
    key_hash: bytes,
    key_hint: str,
) -> GatewayRow:
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(
        f"""INSERT INTO gateways (id, org_id, name, site_ids, allowed_cidrs, key_hash, key_hint)
            VALUES (%s, %s, %s, %s, %s::cidr[], %s, %s) RETURNING {_COLUMNS}""",
        (uuid.uuid4(), org_id, name, site_ids, [str(n) for n in allowed_cidrs], key_hash, key_hint),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], org_id: uuid.UUID, gateway_id: uuid.UUID) -> GatewayRow | None:
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(f"SELECT {_COLUMNS} FROM gateways WHERE org_id = %s AND id = %s", (org_id, gateway_id))
    return await cur.fetchone()


async def list_for_org(
    conn: AsyncConnection[Any], org_id: uuid.UUID, limit: int, offset: int
) -> list[GatewayRow]:
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(
        f"SELECT {_COLUMNS} FROM gateways WHERE org_id = %s ORDER BY created_at, id LIMIT %s OFFSET %s",
        (org_id, limit, offset),
    )
    return await cur.fetchall()


async def rotate(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    gateway_id: uuid.UUID,
    *,
    key_hash: bytes,
    key_hint: str,
    overlap_s: int,
) -> GatewayRow | None:
    """New key; the current one stays valid for ``overlap_s`` (0: not at all). Not for a revoked key."""
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(
        f"""UPDATE gateways
            SET previous_key_hash = CASE WHEN %(overlap)s > 0 THEN key_hash END,
                previous_key_valid_until = CASE WHEN %(overlap)s > 0
                                                THEN now() + make_interval(secs => %(overlap)s) END,
                key_hash = %(hash)s, key_hint = %(hint)s, rotated_at = now()
            WHERE org_id = %(org)s AND id = %(id)s AND revoked_at IS NULL
            RETURNING {_COLUMNS}""",
        {"overlap": overlap_s, "hash": key_hash, "hint": key_hint, "org": org_id, "id": gateway_id},
    )
    return await cur.fetchone()


async def revoke(conn: AsyncConnection[Any], org_id: uuid.UUID, gateway_id: uuid.UUID) -> GatewayRow | None:
    """Revoked at once (an earlier revocation's time is kept); the previous key's overlap ends too."""
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(
        f"""UPDATE gateways
            SET revoked_at = coalesce(revoked_at, now()), previous_key_hash = NULL,
                previous_key_valid_until = NULL
            WHERE org_id = %s AND id = %s
            RETURNING {_COLUMNS}""",
        (org_id, gateway_id),
    )
    return await cur.fetchone()


async def by_key_hash(conn: AsyncConnection[Any], key_hash: bytes) -> GatewayRow | None:
    """The live gateway whose current key (or previous key, within its overlap) has this hash."""
    cur = conn.cursor(row_factory=class_row(GatewayRow))
    await cur.execute(
        f"""SELECT {_COLUMNS} FROM gateways
            WHERE revoked_at IS NULL
              AND (key_hash = %s OR (previous_key_hash = %s AND previous_key_valid_until > now()))""",
        (key_hash, key_hash),
    )
    return await cur.fetchone()


async def touch(conn: AsyncConnection[Any], gateway_id: uuid.UUID) -> None:
    """Last use, written at most once a minute per gateway."""
    await conn.execute(
        "UPDATE gateways SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')",
        (gateway_id,),
    )


async def org_site_ids(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``site_ids`` are sites of the org."""
    cur = conn.cursor(row_factory=scalar_row)
    await cur.execute("SELECT id FROM sites WHERE org_id = %s AND id = ANY(%s)", (org_id, site_ids))
    return set(await cur.fetchall())


async def org_device_ids(
    conn: AsyncConnection[Any], org_id: uuid.UUID, device_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``device_ids`` are devices of the org."""
    cur = conn.cursor(row_factory=scalar_row)
    await cur.execute("SELECT id FROM devices WHERE org_id = %s AND id = ANY(%s)", (org_id, device_ids))
    return set(await cur.fetchall())
