"""SQL for personal API tokens (only a SHA-256 of each token is stored)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

COLUMNS = "id, org_id, user_id, name, role, prefix, created_at, expires_at, revoked_at, last_used_at"


async def insert(
    conn: AsyncConnection[Any],
    *,
    token_id: uuid.UUID,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    role: str,
    token_hash: bytes,
    prefix: str,
    expires_at: datetime,
) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO api_tokens (id, org_id, user_id, name, role, token_hash, prefix, expires_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}
        """,
        (token_id, org_id, user_id, name, role, token_hash, prefix, expires_at),
    )
    row: dict[str, Any] | None = await cur.fetchone()
    assert row is not None
    return row


async def usable_by_hash(conn: AsyncConnection[Any], token_hash: bytes) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL AND expires_at > now()",
        (token_hash,),
    )
    return await cur.fetchone()


async def touch(conn: AsyncConnection[Any], token_id: uuid.UUID) -> None:
    await conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = %s", (token_id,))


async def list_for(
    conn: AsyncConnection[Any], org_id: uuid.UUID, user_id: uuid.UUID | None
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""
        SELECT {COLUMNS} FROM api_tokens
        WHERE org_id = %s AND (%s::uuid IS NULL OR user_id = %s::uuid) ORDER BY created_at DESC
        """,
        (org_id, user_id, user_id),
    )
    return list(await cur.fetchall())


async def get(conn: AsyncConnection[Any], org_id: uuid.UUID, token_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM api_tokens WHERE org_id = %s AND id = %s", (org_id, token_id)
    )
    return await cur.fetchone()


async def revoke(conn: AsyncConnection[Any], token_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (token_id,)
    )
