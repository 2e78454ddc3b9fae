"""SQL of connections; API queries are scoped by ``org_id``."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb

from nattery_shared.errors import Conflict

Row = dict[str, Any]

_COLUMNS = """id, org_id, provider, name, settings, secret_names, secrets_blob, key_id, enabled,
              last_test_at, last_test_ok, created_at, updated_at"""


async def insert(
    conn: AsyncConnection[Any],
    *,
    connection_id: uuid.UUID,
    org_id: uuid.UUID,
    provider: str,
    name: str,
    settings: dict[str, Any],
    secret_names: list[str],
    blob: bytes | None,
    key_id: str | None,
    enabled: bool,
) -> Row:
    try:
        cur = await conn.execute(
            f"""INSERT INTO connections (id, org_id, provider, name, settings, secret_names, secrets_blob,
                                         key_id, enabled)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (connection_id, org_id, provider, name, Jsonb(settings), secret_names, blob, key_id, enabled),
        )
    except UniqueViolation as err:
        raise Conflict(f"this org already has a {provider} connection named {name!r}") from err
    row: Row | None = await cur.fetchone()
    assert row is not None
    return row


async def get(
    conn: AsyncConnection[Any], org_id: uuid.UUID, connection_id: uuid.UUID, *, for_update: bool = False
) -> Row | None:
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM connections WHERE org_id = %s AND id = %s{lock}", (org_id, connection_id)
    )
    row: Row | None = await cur.fetchone()
    return row


async def list_for_org(
    conn: AsyncConnection[Any], org_id: uuid.UUID, *, provider: str | None, limit: int, offset: int
) -> list[Row]:
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM connections WHERE org_id = %s AND (%s::text IS NULL OR provider = %s)
            ORDER BY provider, name LIMIT %s OFFSET %s""",
        (org_id, provider, provider, limit, offset),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def list_enabled(conn: AsyncConnection[Any], provider: str) -> list[Row]:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM connections WHERE provider = %s AND enabled ORDER BY org_id, name",
        (provider,),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def update(
    conn: AsyncConnection[Any],
    connection_id: uuid.UUID,
    *,
    name: str,
    settings: dict[str, Any],
    secret_names: list[str],
    blob: bytes | None,
    key_id: str | None,
    enabled: bool,
) -> Row:
    try:
        cur = await conn.execute(
            f"""UPDATE connections SET name = %s, settings = %s, secret_names = %s, secrets_blob = %s,
                    key_id = %s, enabled = %s, updated_at = now()
                WHERE id = %s RETURNING {_COLUMNS}""",
            (name, Jsonb(settings), secret_names, blob, key_id, enabled, connection_id),
        )
    except UniqueViolation as err:
        raise Conflict(f"this org already has a connection named {name!r} for that provider") from err
    row: Row | None = await cur.fetchone()
    assert row is not None
    return row


async def delete(conn: AsyncConnection[Any], org_id: uuid.UUID, connection_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        f"DELETE FROM connections WHERE org_id = %s AND id = %s RETURNING {_COLUMNS}", (org_id, connection_id)
    )
    row: Row | None = await cur.fetchone()
    return row


async def record_test(conn: AsyncConnection[Any], connection_id: uuid.UUID, ok: bool) -> None:
    await conn.execute(
        "UPDATE connections SET last_test_at = now(), last_test_ok = %s WHERE id = %s", (ok, connection_id)
    )


async def not_under_key(conn: AsyncConnection[Any], key_id: str, limit: int) -> list[Row]:
    """Rows whose secrets are under another key than ``key_id``, locked for re-encryption."""
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM connections WHERE key_id IS NOT NULL AND key_id <> %s
            ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
        (key_id, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def set_secrets(conn: AsyncConnection[Any], connection_id: uuid.UUID, blob: bytes, key_id: str) -> None:
    await conn.execute(
        "UPDATE connections SET secrets_blob = %s, key_id = %s WHERE id = %s", (blob, key_id, connection_id)
    )
