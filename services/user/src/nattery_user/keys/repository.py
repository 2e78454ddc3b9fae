"""SQL for signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# Serialises key creation and rotation across replicas.
KEY_LOCK_ID = 0x4E4154_4B4559  # "NAT" "KEY"


async def lock_keys(conn: AsyncConnection[Any]) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (KEY_LOCK_ID,))


async def published_keys(conn: AsyncConnection[Any], now: datetime) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """
        SELECT kid, public_jwk, private_key_encrypted, created_at, activates_at, retire_after
        FROM signing_keys WHERE retire_after IS NULL OR retire_after > %s
        ORDER BY activates_at, created_at
        """,
        (now,),
    )
    return list(await cur.fetchall())


async def insert_key(
    conn: AsyncConnection[Any],
    *,
    kid: str,
    public_jwk: dict[str, Any],
    encrypted: bytes,
    activates_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO signing_keys (kid, public_jwk, private_key_encrypted, activates_at) VALUES (%s, %s, %s, %s)",
        (kid, Jsonb(public_jwk), encrypted, activates_at),
    )


async def retire_keys_before(conn: AsyncConnection[Any], *, kid: str, retire_after: datetime) -> None:
    """Every other still-published key leaves the JWKS at ``retire_after``."""
    await conn.execute(
        "UPDATE signing_keys SET retire_after = %s WHERE kid <> %s AND retire_after IS NULL",
        (retire_after, kid),
    )


async def delete_keys_retired_before(conn: AsyncConnection[Any], cutoff: datetime) -> None:
    await conn.execute("DELETE FROM signing_keys WHERE retire_after < %s", (cutoff,))
