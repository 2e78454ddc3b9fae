"""Every query of the alerts area: rules, default rules per org, alerts and their history, and the
inputs of the offline check (devices with their creation time, last-seen times kept by presence)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row
from redis.asyncio import Redis

from nattery_device.alerts.schemas import Alert, HistoryEntry, Rule
from nattery_device.presence.latest import LAST_SEEN_KEY

RULE_COLUMNS = (
    "id, org_id, name, kind, severity, enabled, site_id, device_kind, device_id, field, operator, value, "
    "low, high, hysteresis, for_s, clear_for_s, code, offline_after_s, default_key, created_at, updated_at"
)
RULE_INPUTS = (
    "name",
    "kind",
    "severity",
    "enabled",
    "site_id",
    "device_kind",
    "device_id",
    "field",
    "operator",
    "value",
    "low",
    "high",
    "hysteresis",
    "for_s",
    "clear_for_s",
    "code",
    "offline_after_s",
)
ALERT_COLUMNS = (
    "id, org_id, site_id, device_id, rule_id, rule_name, rule_kind, severity, state, message, value, "
    "raised_at, acknowledged_at, acknowledged_by, acknowledge_comment, resolved_at, resolved_by, "
    "resolution, resolve_comment"
)


# --- rules ---------------------------------------------------------------------------------------
async def insert_rule(
    conn: AsyncConnection[Any],
    rule_id: uuid.UUID,
    org_id: uuid.UUID,
    values: dict[str, Any],
    *,
    default_key: str | None = None,
) -> Rule:
    cols = ", ".join(RULE_INPUTS)
    marks = ", ".join(f"%({c})s" for c in RULE_INPUTS)
    async with conn.cursor(row_factory=class_row(Rule)) as cur:
        await cur.execute(
            f"INSERT INTO alert_rules (id, org_id, default_key, {cols}) "
            f"VALUES (%(id)s, %(org_id)s, %(default_key)s, {marks}) RETURNING {RULE_COLUMNS}",
            {**values, "id": rule_id, "org_id": org_id, "default_key": default_key},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def update_rule(
    conn: AsyncConnection[Any], org_id: uuid.UUID, rule_id: uuid.UUID, values: dict[str, Any]
) -> Rule | None:
    sets = ", ".join(f"{c} = %({c})s" for c in RULE_INPUTS)
    async with conn.cursor(row_factory=class_row(Rule)) as cur:
        await cur.execute(
            f"UPDATE alert_rules SET {sets}, updated_at = now() WHERE id = %(id)s AND org_id = %(org_id)s "
            f"RETURNING {RULE_COLUMNS}",
            {**values, "id": rule_id, "org_id": org_id},
        )
        return await cur.fetchone()


async def rule(conn: AsyncConnection[Any], org_id: uuid.UUID, rule_id: uuid.UUID) -> Rule | None:
    async with conn.cursor(row_factory=class_row(Rule)) as cur:
        await cur.execute(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = %s AND org_id = %s", (rule_id, org_id)
        )
        return await cur.fetchone()


async def rules_of_org(conn: AsyncConnection[Any], org_id: uuid.UUID) -> list[Rule]:
    async with conn.cursor(row_factory=class_row(Rule)) as cur:
        await cur.execute(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE org_id = %s ORDER BY created_at, id", (org_id,)
        )
        return await cur.fetchall()


async def enabled_rules(conn: AsyncConnection[Any], kinds: list[str]) -> list[Rule]:
    async with conn.cursor(row_factory=class_row(Rule)) as cur:
        await cur.execute(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE enabled AND kind = ANY(%s)", (kinds,)
        )
        return await cur.fetchall()


async def delete_rule(conn: AsyncConnection[Any], org_id: uuid.UUID, rule_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM alert_rules WHERE id = %s AND org_id = %s", (rule_id, org_id))
    return cur.rowcount > 0


async def mark_org_seeded(conn: AsyncConnection[Any], org_id: uuid.UUID) -> bool:
    """True the first time for an org (its default rules are to be created now)."""
    cur = await conn.execute("INSERT INTO alert_orgs (org_id) VALUES (%s) ON CONFLICT DO NOTHING", (org_id,))
    return cur.rowcount > 0


async def orgs_not_seeded(conn: AsyncConnection[Any]) -> list[uuid.UUID]:
    cur = await conn.execute(
        "SELECT DISTINCT s.org_id FROM sites s LEFT JOIN alert_orgs a ON a.org_id = s.org_id "
        "WHERE a.org_id IS NULL"
    )
    return [r["org_id"] for r in await cur.fetchall()]


async def site_in_org(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM sites WHERE id = %s AND org_id = %s", (site_id, org_id))
    return await cur.fetchone() is not None


async def device_in_org(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM devices WHERE id = %s AND org_id = %s", (device_id, org_id))
    return await cur.fetchone() is not None


# --- alerts --------------------------------------------------------------------------------------
async def insert_alert(conn: AsyncConnection[Any], values: dict[str, Any]) -> bool:
    """Open an alert unless one is open for the rule and device (then False)."""
    cur = await conn.execute(
        """INSERT INTO alerts (id, org_id, site_id, device_id, rule_id, rule_name, rule_kind, severity,
                               state, message, value, raised_at)
           VALUES (%(id)s, %(org_id)s, %(site_id)s, %(device_id)s, %(rule_id)s, %(rule_name)s,
                   %(rule_kind)s, %(severity)s, 'firing', %(message)s, %(value)s, %(raised_at)s)
           ON CONFLICT (rule_id, device_id) WHERE state <> 'resolved' DO NOTHING""",
        values,
    )
    return cur.rowcount > 0


async def resolve_open(
    conn: AsyncConnection[Any],
    rule_id: uuid.UUID,
    device_id: uuid.UUID,
    at: datetime,
    resolution: str,
) -> Alert | None:
    async with conn.cursor(row_factory=class_row(Alert)) as cur:
        await cur.execute(
            f"""UPDATE alerts SET state = 'resolved', resolved_at = %s, resolution = %s
                WHERE rule_id = %s AND device_id = %s AND state <> 'resolved'
                RETURNING {ALERT_COLUMNS}""",
            (at, resolution, rule_id, device_id),
        )
        return await cur.fetchone()


async def open_of_rule(conn: AsyncConnection[Any], org_id: uuid.UUID, rule_id: uuid.UUID) -> list[Alert]:
    async with conn.cursor(row_factory=class_row(Alert)) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE org_id = %s AND rule_id = %s AND state <> 'resolved' "
            "FOR UPDATE",
            (org_id, rule_id),
        )
        return await cur.fetchall()


async def alert(
    conn: AsyncConnection[Any], org_id: uuid.UUID, alert_id: uuid.UUID, *, lock: bool = False
) -> Alert | None:
    async with conn.cursor(row_factory=class_row(Alert)) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s AND org_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (alert_id, org_id),
        )
        return await cur.fetchone()


async def acknowledge(
    conn: AsyncConnection[Any], alert_id: uuid.UUID, at: datetime, by: str, comment: str | None
) -> None:
    await conn.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s, "
        "acknowledge_comment = %s WHERE id = %s",
        (at, by, comment, alert_id),
    )


async def resolve_by_hand(
    conn: AsyncConnection[Any],
    alert_id: uuid.UUID,
    at: datetime,
    by: str | None,
    comment: str | None,
    resolution: str,
) -> None:
    await conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = %s, resolved_by = %s, resolve_comment = %s, "
        "resolution = %s WHERE id = %s",
        (at, by, comment, resolution, alert_id),
    )


async def add_history(
    conn: AsyncConnection[Any],
    alert_id: uuid.UUID,
    action: str,
    at: datetime,
    by: str | None = None,
    comment: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO alert_history (alert_id, action, at, by, comment) VALUES (%s, %s, %s, %s, %s)",
        (alert_id, action, at, by, comment),
    )


async def history(conn: AsyncConnection[Any], alert_id: uuid.UUID) -> list[HistoryEntry]:
    async with conn.cursor(row_factory=class_row(HistoryEntry)) as cur:
        await cur.execute(
            "SELECT action, at, by, comment FROM alert_history WHERE alert_id = %s ORDER BY id", (alert_id,)
        )
        return await cur.fetchall()


async def list_alerts(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    *,
    site_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    rule_id: uuid.UUID | None,
    severity: str | None,
    states: list[str] | None,
    limit: int,
    offset: int,
) -> tuple[list[Alert], int]:
    where = ["org_id = %(org_id)s"]
    params: dict[str, Any] = {"org_id": org_id, "limit": limit, "offset": offset}
    for name, value in (
        ("site_id", site_id),
        ("device_id", device_id),
        ("rule_id", rule_id),
        ("severity", severity),
    ):
        if value is not None:
            where.append(f"{name} = %({name})s")
            params[name] = value
    if states is not None:
        where.append("state = ANY(%(states)s)")
        params["states"] = states
    clause = " AND ".join(where)
    async with conn.cursor(row_factory=class_row(Alert)) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {clause} ORDER BY raised_at DESC, id "
            "LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        items = await cur.fetchall()
    cur2 = await conn.execute(f"SELECT count(*) AS n FROM alerts WHERE {clause}", params)
    row = await cur2.fetchone()
    return items, int(row["n"]) if row else 0


async def open_keys(conn: AsyncConnection[Any]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(rule, device) of every open alert: the evaluator's firing state after a restart."""
    cur = await conn.execute(
        "SELECT rule_id, device_id FROM alerts WHERE state <> 'resolved' AND rule_id IS NOT NULL"
    )
    return [(r["rule_id"], r["device_id"]) for r in await cur.fetchall()]


# --- offline check -------------------------------------------------------------------------------
async def devices_for_offline(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, org_id, site_id, kind, created_at FROM devices")
        return await cur.fetchall()


async def newest_alerts_of_rules(
    conn: AsyncConnection[Any], rule_ids: list[uuid.UUID]
) -> dict[tuple[uuid.UUID, uuid.UUID], tuple[str, datetime]]:
    """(rule, device) -> (state, raised_at) of the newest alert of each pair."""
    cur = await conn.execute(
        """SELECT DISTINCT ON (rule_id, device_id) rule_id, device_id, state, raised_at FROM alerts
           WHERE rule_id = ANY(%s) ORDER BY rule_id, device_id, raised_at DESC""",
        (rule_ids,),
    )
    return {(r["rule_id"], r["device_id"]): (r["state"], r["raised_at"]) for r in await cur.fetchall()}


async def last_seen(redis: Redis) -> dict[uuid.UUID, float]:
    """Device id -> epoch seconds of its newest sample (presence's sorted set, read only)."""
    raw: list[tuple[bytes, float]] = await redis.zrange(LAST_SEEN_KEY, 0, -1, withscores=True)  # type: ignore[assignment]
    return {uuid.UUID(member.decode()): score for member, score in raw}
