"""SQL for the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


async def insert(
    conn: AsyncConnection[Any],
    *,
    org_id: uuid.UUID | None,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    source: str = "user",
    at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> bool:
    """Insert one entry; an entry whose ``event_id`` is already stored is skipped (returns False)."""
    cur = await conn.execute(
        """
        INSERT INTO audit_log (event_id, org_id, actor, action, target, details, source, at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now()))
        ON CONFLICT (event_id) DO NOTHING
        """,
        (event_id, org_id, actor, action, target, Jsonb(details or {}), source, at),
    )
    return cur.rowcount == 1


async def query(
    conn: AsyncConnection[Any],
    *,
    org_id: uuid.UUID,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first; keyset paging on id. ``action`` ending in ``.`` or ``*`` matches a prefix."""
    clauses = ["org_id = %(org)s"]
    params: dict[str, Any] = {"org": org_id, "limit": limit}
    if actor is not None:
        clauses.append("actor = %(actor)s")
        params["actor"] = actor
    if action is not None:
        if action.endswith("*"):
            clauses.append("action LIKE %(action)s")
            params["action"] = action[:-1].replace("%", r"\%").replace("_", r"\_") + "%"
        else:
            clauses.append("action = %(action)s")
            params["action"] = action
    if since is not None:
        clauses.append("at >= %(since)s")
        params["since"] = since
    if until is not None:
        clauses.append("at < %(until)s")
        params["until"] = until
    if before_id is not None:
        clauses.append("id < %(before)s")
        params["before"] = before_id
    sql = (
        "SELECT id, org_id, actor, action, target, details, source, at FROM audit_log WHERE "
        + " AND ".join(clauses)
        + " ORDER BY id DESC LIMIT %(limit)s"
    )
    cur = await conn.execute(sql.encode(), params)
    return list(await cur.fetchall())
