"""SQL of the job table. Times that decide who runs what come from PostgreSQL's clock (``now()``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]


async def ensure(
    conn: AsyncConnection[Any], name: str, provider: str | None, first_run_at: datetime, regular_at: datetime
) -> None:
    """Create the row (first run at ``first_run_at``); an existing row keeps its schedule, but never
    waits past the current schedule's next regular run (a schedule made more frequent takes effect)."""
    await conn.execute(
        """INSERT INTO jobs (name, provider, next_run_at, scheduled_for) VALUES (%s, %s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET provider = EXCLUDED.provider,
               next_run_at = LEAST(jobs.next_run_at, %s),
               scheduled_for = CASE WHEN jobs.next_run_at > %s THEN %s ELSE jobs.scheduled_for END""",
        (name, provider, first_run_at, first_run_at, regular_at, regular_at, regular_at),
    )


async def claim_due(conn: AsyncConnection[Any], names: list[str], replica: str, lease_s: float) -> Row | None:
    """Take one due job that nobody holds (SKIP LOCKED: replicas never wait on each other)."""
    cur = await conn.execute(
        """UPDATE jobs SET lease_until = now() + make_interval(secs => %s), leased_by = %s,
               last_started_at = now(), runs = runs + 1
           WHERE name = (
               SELECT name FROM jobs
               WHERE name = ANY(%s) AND next_run_at <= now()
                 AND (lease_until IS NULL OR lease_until < now())
               ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING name, scheduled_for, attempt, last_success_at, now() AS started_at""",
        (lease_s, replica, names),
    )
    row: Row | None = await cur.fetchone()
    return row


async def renew(conn: AsyncConnection[Any], name: str, replica: str, lease_s: float) -> bool:
    cur = await conn.execute(
        "UPDATE jobs SET lease_until = now() + make_interval(secs => %s) WHERE name = %s AND leased_by = %s",
        (lease_s, name, replica),
    )
    return cur.rowcount > 0


async def release(conn: AsyncConnection[Any], name: str, replica: str) -> bool:
    """Give a lease back without recording a run (the run was interrupted): due again at once."""
    cur = await conn.execute(
        "UPDATE jobs SET lease_until = NULL, leased_by = NULL WHERE name = %s AND leased_by = %s",
        (name, replica),
    )
    return cur.rowcount > 0


async def release_all(conn: AsyncConnection[Any], replica: str) -> list[str]:
    """Give back every lease ``replica`` still holds (it is stopping); returns the jobs' names."""
    cur = await conn.execute(
        "UPDATE jobs SET lease_until = NULL, leased_by = NULL WHERE leased_by = %s RETURNING name",
        (replica,),
    )
    return [r["name"] for r in await cur.fetchall()]


async def finish(
    conn: AsyncConnection[Any],
    name: str,
    replica: str,
    *,
    next_run_at: datetime,
    scheduled_for: datetime,
    attempt: int,
    outcome: str,
    message: str,
    error: str | None,
) -> bool:
    """Record the run and release the lease; False when the lease was lost to another replica."""
    cur = await conn.execute(
        """UPDATE jobs SET next_run_at = %s, scheduled_for = %s, attempt = %s, lease_until = NULL,
               leased_by = NULL, last_finished_at = now(), last_outcome = %s, last_message = %s,
               last_error = %s,
               last_success_at = CASE WHEN %s = 'ok' THEN now() ELSE last_success_at END
           WHERE name = %s AND leased_by = %s""",
        (next_run_at, scheduled_for, attempt, outcome, message[:1000], error, outcome, name, replica),
    )
    return cur.rowcount > 0


async def list_all(conn: AsyncConnection[Any]) -> list[Row]:
    cur = await conn.execute(
        """SELECT name, provider, next_run_at, scheduled_for, attempt, lease_until, leased_by,
                  last_started_at, last_finished_at, last_outcome, last_message, last_error,
                  last_success_at, runs, (lease_until IS NOT NULL AND lease_until > now()) AS running
           FROM jobs ORDER BY name"""
    )
    rows: list[Row] = await cur.fetchall()
    return rows


async def next_runs_by_provider(conn: AsyncConnection[Any], names: list[str]) -> dict[str, datetime]:
    cur = await conn.execute(
        "SELECT provider, min(next_run_at) AS next_run_at FROM jobs "
        "WHERE provider IS NOT NULL AND name = ANY(%s) GROUP BY provider",
        (names,),
    )
    return {row["provider"]: row["next_run_at"] for row in await cur.fetchall()}
