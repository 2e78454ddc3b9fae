"""SQL of inbound webhook deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]


async def store_many(
    conn: AsyncConnection[Any], rows: Sequence[tuple[str, str, datetime, bytes]]
) -> set[tuple[str, str]]:
    """Insert ``(provider, delivery_id, signed_at, body)`` rows in one statement; returns the
    ``(provider, delivery_id)`` of the rows stored now (the others were already there: replays)."""
    providers, delivery_ids, signed, bodies = (list(column) for column in zip(*rows, strict=True))
    cur = await conn.execute(
        """INSERT INTO webhook_deliveries (provider, delivery_id, signed_at, body)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::bytea[])
           ON CONFLICT (provider, delivery_id) DO NOTHING RETURNING provider, delivery_id""",
        (providers, delivery_ids, signed, bodies),
    )
    return {(row["provider"], row["delivery_id"]) for row in await cur.fetchall()}


async def claim(conn: AsyncConnection[Any], lease_s: float, limit: int) -> list[Row]:
    cur = await conn.execute(
        """UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => %s),
               attempts = attempts + 1
           WHERE id IN (SELECT id FROM webhook_deliveries
                        WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < now())
                        ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING id, provider, delivery_id, signed_at, received_at, body, attempts""",
        (lease_s, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return sorted(rows, key=lambda r: r["id"])


async def mark(conn: AsyncConnection[Any], delivery_row: int, status: str, error: str | None = None) -> None:
    await conn.execute(
        """UPDATE webhook_deliveries SET status = %s, last_error = %s, lease_until = NULL,
               processed_at = CASE WHEN %s = 'processed' THEN now() ELSE processed_at END
           WHERE id = %s""",
        (status, error, status, delivery_row),
    )


async def mark_many(conn: AsyncConnection[Any], delivery_rows: list[int], status: str) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = %s, last_error = NULL, lease_until = NULL WHERE id = ANY(%s)",
        (status, delivery_rows),
    )


async def retry_later(conn: AsyncConnection[Any], delivery_row: int, delay_s: float, error: str) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => %s), last_error = %s "
        "WHERE id = %s",
        (delay_s, error[:1000], delivery_row),
    )


async def get(conn: AsyncConnection[Any], provider: str, delivery_id: str) -> Row | None:
    cur = await conn.execute(
        "SELECT * FROM webhook_deliveries WHERE provider = %s AND delivery_id = %s", (provider, delivery_id)
    )
    row: Row | None = await cur.fetchone()
    return row
