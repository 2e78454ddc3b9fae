"""SQL for per-user settings."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


async def get(conn: AsyncConnection[Any], user_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT timezone, units, notifications FROM user_settings WHERE user_id = %s", (user_id,)
    )
    return await cur.fetchone()


async def upsert(
    conn: AsyncConnection[Any],
    user_id: uuid.UUID,
    *,
    timezone: str,
    units: str,
    notifications: dict[str, Any],
) -> None:
    await conn.execute(
        """
        INSERT INTO user_settings (user_id, timezone, units, notifications) VALUES (%s, %s, %s, %s)
        ON CONFLICT (user_id) DO UPDATE SET timezone = EXCLUDED.timezone, units = EXCLUDED.units,
            notifications = EXCLUDED.notifications, updated_at = now()
        """,
        (user_id, timezone, units, Jsonb(notifications)),
    )
