"""SQL for sessions (refresh-token families) and the refresh tokens issued in them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection


async def insert_session(
    conn: AsyncConnection[Any],
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    org_id: uuid.UUID,
    token_hash: bytes,
    expires_at: datetime,
    client_address: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO sessions (id, user_id, org_id, current_token_hash, expires_at, client_address, user_agent)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        """,
        (session_id, user_id, org_id, token_hash, expires_at, client_address, (user_agent or "")[:300]),
    )
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (%s, %s)", (token_hash, session_id)
    )


async def live_session(conn: AsyncConnection[Any], session_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        """
        SELECT id, user_id, org_id, current_token_hash, expires_at FROM sessions
        WHERE id = %s AND revoked_at IS NULL AND expires_at > now()
        """,
        (session_id,),
    )
    return await cur.fetchone()


async def rotate(
    conn: AsyncConnection[Any], *, session_id: uuid.UUID, old_hash: bytes, new_hash: bytes
) -> dict[str, Any] | None:
    """Compare-and-swap the session's current token; None when it was not the current one."""
    cur = await conn.execute(
        """
        UPDATE sessions SET current_token_hash = %s, rotated_at = now()
        WHERE id = %s AND current_token_hash = %s AND revoked_at IS NULL AND expires_at > now()
        RETURNING id, user_id, org_id, expires_at
        """,
        (new_hash, session_id, old_hash),
    )
    row = await cur.fetchone()
    if row is not None:
        await conn.execute("UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = %s", (old_hash,))
        await conn.execute(
            "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (%s, %s)", (new_hash, session_id)
        )
    return row


async def was_issued_in(conn: AsyncConnection[Any], token_hash: bytes, session_id: uuid.UUID) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM refresh_tokens WHERE token_hash = %s AND session_id = %s", (token_hash, session_id)
    )
    return await cur.fetchone() is not None


async def revoke_session(
    conn: AsyncConnection[Any], session_id: uuid.UUID, reason: str
) -> dict[str, Any] | None:
    cur = await conn.execute(
        """
        UPDATE sessions SET revoked_at = now(), revoked_reason = %s
        WHERE id = %s AND revoked_at IS NULL RETURNING id, user_id, org_id
        """,
        (reason, session_id),
    )
    return await cur.fetchone()


async def revoke_user_sessions(
    conn: AsyncConnection[Any], user_id: uuid.UUID, reason: str, org_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    cur = await conn.execute(
        """
        UPDATE sessions SET revoked_at = now(), revoked_reason = %s
        WHERE user_id = %s AND revoked_at IS NULL AND (%s::uuid IS NULL OR org_id = %s::uuid) RETURNING id
        """,
        (reason, user_id, org_id, org_id),
    )
    return [row["id"] for row in await cur.fetchall()]
