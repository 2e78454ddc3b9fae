"""SQL for commands and their transitions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

Row = dict[str, Any]

_COLUMNS = (
    "c.id, c.org_id, c.site_id, c.device_id, c.type, c.params, c.state, c.edge_status, c.reason, c.applied, "
    "c.source, c.idempotency_key, c.request_hash, c.issued_at, c.expires_at, c.sent_at, c.updated_at, "
    "s.slug AS site_slug, d.slug AS device_slug"
)
_FROM = "FROM commands c JOIN sites s ON s.id = c.site_id JOIN devices d ON d.id = c.device_id"


async def insert(conn: AsyncConnection[Any], values: dict[str, Any]) -> bool:
    """Insert unless a command with this id (or org + idempotency key) exists; True when inserted."""
    cur = await conn.execute(
        """INSERT INTO commands (id, org_id, site_id, device_id, type, params, state, source, idempotency_key,
                                 request_hash, issued_at, expires_at)
           VALUES (%(id)s, %(org_id)s, %(site_id)s, %(device_id)s, %(type)s, %(params)s, 'pending', %(source)s,
                   %(idempotency_key)s, %(request_hash)s, %(issued_at)s, %(expires_at)s)
           ON CONFLICT DO NOTHING""",
        {**values, "params": Jsonb(values["params"])},
    )
    inserted = cur.rowcount == 1
    if inserted:
        await add_transition(conn, values["id"], "pending", None, None, values["issued_at"])
    return inserted


async def get(
    conn: AsyncConnection[Any], command_id: uuid.UUID, org_id: uuid.UUID | None = None
) -> Row | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE c.id = %s AND (%s::uuid IS NULL OR c.org_id = %s)",
        (command_id, org_id, org_id),
    )
    row: Row | None = await cur.fetchone()
    return row


async def claim(conn: AsyncConnection[Any], command_id: uuid.UUID) -> Row | None:
    """The command, row-locked for the caller's transaction; None when missing or another
    transaction holds it (a concurrent dispatch: it publishes, this one must not)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE c.id = %s FOR UPDATE OF c SKIP LOCKED", (command_id,)
    )
    row: Row | None = await cur.fetchone()
    return row


async def by_idempotency_key(conn: AsyncConnection[Any], org_id: uuid.UUID, key: str) -> Row | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE c.org_id = %s AND c.idempotency_key = %s", (org_id, key)
    )
    row: Row | None = await cur.fetchone()
    return row


async def transitions(conn: AsyncConnection[Any], command_id: uuid.UUID) -> list[Row]:
    cur = await conn.execute(
        "SELECT state, edge_status, reason, at FROM command_transitions WHERE command_id = %s ORDER BY id",
        (command_id,),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def add_transition(
    conn: AsyncConnection[Any],
    command_id: uuid.UUID,
    state: str,
    edge_status: str | None,
    reason: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO command_transitions (command_id, state, edge_status, reason, at) VALUES (%s, %s, %s, %s, %s)",
        (command_id, state, edge_status, reason, at),
    )


async def move(
    conn: AsyncConnection[Any],
    command_id: uuid.UUID,
    *,
    from_states: Sequence[str],
    to_state: str,
    at: datetime,
    edge_status: str | None = None,
    reason: str | None = None,
    applied: dict[str, Any] | None = None,
) -> Row | None:
    """Conditional transition; None when the command is not in one of ``from_states``."""
    cur = await conn.execute(
        """UPDATE commands SET state = %s, edge_status = COALESCE(%s, edge_status), reason = COALESCE(%s, reason),
                  applied = COALESCE(%s, applied), sent_at = CASE WHEN %s = 'sent' THEN %s ELSE sent_at END,
                  updated_at = now()
           WHERE id = %s AND state = ANY(%s) RETURNING id""",
        (
            to_state,
            edge_status,
            reason,
            Jsonb(applied) if applied is not None else None,
            to_state,
            at,
            command_id,
            list(from_states),
        ),
    )
    if await cur.fetchone() is None:
        return None
    await add_transition(conn, command_id, to_state, edge_status, reason, at)
    return await get(conn, command_id)


async def open_for_device(conn: AsyncConnection[Any], device_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """The device's commands still waiting for an answer (pending or sent) and not expired, oldest first."""
    cur = await conn.execute(
        """SELECT id FROM commands WHERE device_id = %s AND state IN ('pending', 'sent') AND expires_at > %s
           ORDER BY issued_at""",
        (device_id, now),
    )
    return [row["id"] for row in await cur.fetchall()]


async def due(
    conn: AsyncConnection[Any], *, now: datetime, resend_before: datetime, limit: int = 200
) -> list[Row]:
    """Open commands that expired, or were never sent, or were sent long ago without an answer."""
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} {_FROM}
            WHERE c.state IN ('pending', 'sent') AND (c.expires_at <= %s OR c.state = 'pending'
                  OR c.sent_at < %s)
            ORDER BY c.issued_at LIMIT %s""",
        (now, resend_before, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def device_target(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID, device_id: uuid.UUID | None
) -> Row | None:
    """The device a command goes to: the given one, or the site's (first) inverter."""
    cur = await conn.execute(
        """SELECT d.id, d.org_id, d.site_id, d.slug, s.slug AS site_slug, s.safety_limits
           FROM devices d JOIN sites s ON s.id = d.site_id
           WHERE d.org_id = %s AND d.site_id = %s AND (%s::uuid IS NULL AND d.kind = 'inverter' OR d.id = %s)
           ORDER BY d.created_at LIMIT 1""",
        (org_id, site_id, device_id, device_id),
    )
    row: Row | None = await cur.fetchone()
    return row


async def device_by_id(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        """SELECT d.id, d.org_id, d.site_id, d.slug, s.slug AS site_slug, s.safety_limits
           FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.org_id = %s AND d.id = %s""",
        (org_id, device_id),
    )
    row: Row | None = await cur.fetchone()
    return row
