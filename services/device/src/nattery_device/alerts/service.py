"""Alert rules and alerts: rules CRUD (validated, org-scoped), the default rules each org gets the first
time it is seen, raising and resolving alerts (one open alert per rule and device, each change in the
alert's history and published through the outbox in the same transaction), acknowledgement and manual
resolution. The evaluation itself (telemetry, faults, the offline check) is ``evaluator.py``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import AlertRaised, AlertResolved, AlertSeverity, EventType
from nattery_device.alerts import repository
from nattery_device.alerts.schemas import (
    Alert,
    AlertDetail,
    AlertPage,
    AlertState,
    Operator,
    Rule,
    RuleIn,
    RuleKind,
    StateFilter,
)
from nattery_device.devices.schemas import DeviceKind
from nattery_device.publishing import OUTBOX
from nattery_shared.auth import Principal
from nattery_shared.errors import Conflict, NotFound, Unprocessable

# Created for every org the first time device-service sees it (a site of the org, or its first call
# to the rules API); created once, so a default deleted or changed by hand stays so.
DEFAULT_RULES: dict[str, RuleIn] = {
    "offline": RuleIn(
        name="Device offline (no data for 15 minutes)",
        kind=RuleKind.OFFLINE,
        severity=AlertSeverity.CRITICAL,
        offline_after_s=900,
    ),
    "inverter_fault": RuleIn(
        name="Inverter fault",
        kind=RuleKind.FAULT,
        severity=AlertSeverity.CRITICAL,
        device_kind=DeviceKind.INVERTER,
        code="F*",
    ),
    "battery_temperature_high": RuleIn(
        name="Battery temperature high",
        kind=RuleKind.THRESHOLD,
        severity=AlertSeverity.WARNING,
        device_kind=DeviceKind.INVERTER,
        field="battery_temperature_c",
        operator=Operator.GT,
        value=50.0,
        hysteresis=3.0,
        for_s=120,
        clear_for_s=60,
    ),
    "soc_floor": RuleIn(
        name="Battery SOC below 10 %",
        kind=RuleKind.THRESHOLD,
        severity=AlertSeverity.WARNING,
        device_kind=DeviceKind.INVERTER,
        field="battery_soc_pct",
        operator=Operator.LT,
        value=10.0,
        hysteresis=2.0,
        for_s=300,
        clear_for_s=60,
    ),
}


def _values(body: RuleIn) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"id", "org_id", "default_key", "created_at", "updated_at"})


async def seed_org(conn: AsyncConnection[Any], org_id: uuid.UUID) -> bool:
    """Create the org's default rules the first time (idempotent; True when created now)."""
    if not await repository.mark_org_seeded(conn, org_id):
        return False
    for key, body in DEFAULT_RULES.items():
        await repository.insert_rule(conn, uuid.uuid4(), org_id, _values(body), default_key=key)
    return True


async def seed_new_orgs(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        orgs = await repository.orgs_not_seeded(conn)
    created = 0
    for org_id in orgs:
        async with pool.connection() as conn, conn.transaction():
            created += await seed_org(conn, org_id)
    return created


# --- raising and resolving (the evaluator and the API) -------------------------------------------
async def raise_alert(
    conn: AsyncConnection[Any],
    rule: Rule,
    *,
    org_id: uuid.UUID,
    site_id: uuid.UUID,
    device_id: uuid.UUID,
    message: str,
    value: float | None,
    at: datetime,
) -> uuid.UUID | None:
    """Open an alert (None when one is open for the rule and device already)."""
    alert_id = uuid.uuid4()
    inserted = await repository.insert_alert(
        conn,
        {
            "id": alert_id,
            "org_id": org_id,
            "site_id": site_id,
            "device_id": device_id,
            "rule_id": rule.id,
            "rule_name": rule.name,
            "rule_kind": rule.kind.value,
            "severity": rule.severity.value,
            "message": message,
            "value": value,
            "raised_at": at,
        },
    )
    if not inserted:
        return None
    await repository.add_history(conn, alert_id, "raised", at)
    await OUTBOX.enqueue(
        conn,
        EventType.ALERT_RAISED,
        AlertRaised(
            alert_id=alert_id,
            org_id=org_id,
            site_id=site_id,
            device_id=device_id,
            rule_id=rule.id,
            severity=rule.severity,
            code=rule.kind.value
            if rule.kind is not RuleKind.THRESHOLD and rule.kind is not RuleKind.BAND
            else f"{rule.kind.value}:{rule.field}",
            message=message,
            value=value,
            at=at,
        ),
        subject=str(device_id),
    )
    return alert_id


async def _resolved(
    conn: AsyncConnection[Any],
    alert: Alert,
    at: datetime,
    by: str | None,
    comment: str | None,
    resolution: str,
) -> None:
    await repository.add_history(conn, alert.id, "resolved", at, by, comment)
    await OUTBOX.enqueue(
        conn,
        EventType.ALERT_RESOLVED,
        AlertResolved(
            alert_id=alert.id,
            org_id=alert.org_id,
            site_id=alert.site_id,
            device_id=alert.device_id,
            rule_id=alert.rule_id,
            resolution=resolution,
            resolved_by=by,
            at=at,
        ),
        subject=str(alert.device_id),
    )


async def resolve_cleared(
    conn: AsyncConnection[Any], rule_id: uuid.UUID, device_id: uuid.UUID, at: datetime, comment: str
) -> bool:
    """The condition cleared: resolve the open alert of the rule and device, if any."""
    alert = await repository.resolve_open(conn, rule_id, device_id, at, "cleared")
    if alert is None:
        return False
    await _resolved(conn, alert, at, None, comment, "cleared")
    return True


# --- API ---------------------------------------------------------------------------------------
async def _check_scope(conn: AsyncConnection[Any], org_id: uuid.UUID, body: RuleIn) -> None:
    if body.site_id is not None and not await repository.site_in_org(conn, org_id, body.site_id):
        raise Unprocessable("site_id: no such site in your org")
    if body.device_id is not None and not await repository.device_in_org(conn, org_id, body.device_id):
        raise Unprocessable("device_id: no such device in your org")


async def list_rules(pool: AsyncConnectionPool, org_id: uuid.UUID) -> tuple[list[Rule], bool]:
    """The org's rules, and whether its default rules were created just now."""
    async with pool.connection() as conn:
        async with conn.transaction():
            seeded = await seed_org(conn, org_id)
        return await repository.rules_of_org(conn, org_id), seeded


async def get_rule(pool: AsyncConnectionPool, org_id: uuid.UUID, rule_id: uuid.UUID) -> Rule:
    async with pool.connection() as conn:
        rule = await repository.rule(conn, org_id, rule_id)
    if rule is None:
        raise NotFound("no such alert rule")
    return rule


async def create_rule(pool: AsyncConnectionPool, org_id: uuid.UUID, body: RuleIn) -> Rule:
    async with pool.connection() as conn, conn.transaction():
        await seed_org(conn, org_id)
        await _check_scope(conn, org_id, body)
        return await repository.insert_rule(conn, uuid.uuid4(), org_id, _values(body))


async def replace_rule(
    pool: AsyncConnectionPool,
    org_id: uuid.UUID,
    rule_id: uuid.UUID,
    body: RuleIn,
    *,
    now: Callable[[], datetime],
) -> Rule:
    """Replace a rule whole; its open alerts are resolved (their condition is no longer the rule's)."""
    async with pool.connection() as conn, conn.transaction():
        await _check_scope(conn, org_id, body)
        rule = await repository.update_rule(conn, org_id, rule_id, _values(body))
        if rule is None:
            raise NotFound("no such alert rule")
        await _resolve_all_of_rule(conn, org_id, rule_id, now(), "rule_changed")
        return rule


async def delete_rule(
    pool: AsyncConnectionPool, org_id: uuid.UUID, rule_id: uuid.UUID, *, now: Callable[[], datetime]
) -> None:
    async with pool.connection() as conn, conn.transaction():
        if await repository.rule(conn, org_id, rule_id) is None:
            raise NotFound("no such alert rule")
        await _resolve_all_of_rule(conn, org_id, rule_id, now(), "rule_deleted")
        await repository.delete_rule(conn, org_id, rule_id)


async def _resolve_all_of_rule(
    conn: AsyncConnection[Any], org_id: uuid.UUID, rule_id: uuid.UUID, at: datetime, resolution: str
) -> None:
    for alert in await repository.open_of_rule(conn, org_id, rule_id):
        await repository.resolve_by_hand(conn, alert.id, at, None, None, resolution)
        await _resolved(conn, alert, at, None, None, resolution)


async def list_alerts(
    pool: AsyncConnectionPool,
    org_id: uuid.UUID,
    *,
    site_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    rule_id: uuid.UUID | None,
    severity: AlertSeverity | None,
    state: StateFilter | None,
    limit: int,
    offset: int,
) -> AlertPage:
    states: list[str] | None = None
    if state is StateFilter.OPEN:
        states = [AlertState.FIRING.value, AlertState.ACKNOWLEDGED.value]
    elif state is not None:
        states = [state.value]
    async with pool.connection() as conn:
        items, total = await repository.list_alerts(
            conn,
            org_id,
            site_id=site_id,
            device_id=device_id,
            rule_id=rule_id,
            severity=severity.value if severity else None,
            states=states,
            limit=limit,
            offset=offset,
        )
    return AlertPage(items=items, total=total, limit=limit, offset=offset)


async def get_alert(pool: AsyncConnectionPool, org_id: uuid.UUID, alert_id: uuid.UUID) -> AlertDetail:
    async with pool.connection() as conn:
        alert = await repository.alert(conn, org_id, alert_id)
        if alert is None:
            raise NotFound("no such alert")
        history = await repository.history(conn, alert_id)
    return AlertDetail(**alert.model_dump(), history=history)


async def acknowledge(
    pool: AsyncConnectionPool, principal: Principal, alert_id: uuid.UUID, comment: str | None
) -> AlertDetail:
    now = datetime.now(UTC)
    async with pool.connection() as conn, conn.transaction():
        alert = await repository.alert(conn, principal.org_id, alert_id, lock=True)
        if alert is None:
            raise NotFound("no such alert")
        if alert.state is not AlertState.FIRING:
            raise Conflict(f"the alert is {alert.state.value}: only a firing alert is acknowledged")
        await repository.acknowledge(conn, alert_id, now, principal.subject, comment)
        await repository.add_history(conn, alert_id, "acknowledged", now, principal.subject, comment)
    return await get_alert(pool, principal.org_id, alert_id)


async def resolve(
    pool: AsyncConnectionPool, principal: Principal, alert_id: uuid.UUID, comment: str | None
) -> AlertDetail:
    now = datetime.now(UTC)
    async with pool.connection() as conn, conn.transaction():
        alert = await repository.alert(conn, principal.org_id, alert_id, lock=True)
        if alert is None:
            raise NotFound("no such alert")
        if alert.state is AlertState.RESOLVED:
            raise Conflict("the alert is resolved already")
        await repository.resolve_by_hand(conn, alert_id, now, principal.subject, comment, "manual")
        await _resolved(conn, alert, now, principal.subject, comment, "manual")
    return await get_alert(pool, principal.org_id, alert_id)
