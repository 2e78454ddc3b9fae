"""Audit log: filters and paging for admins, other services' entries consumed from RabbitMQ (user.audit)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from nattery_contracts.events import AuditRecorded, CommandRequested, EventType, make_event
from nattery_shared.rabbit import EventBus
from nattery_shared.settings import RabbitSettings
from nattery_shared.testing import TEST_RABBIT_URL
from nattery_user.audit import service as audit
from nattery_user.deps import UserContext

from .conftest import Org, bearer, login


async def audit_page(client: httpx.AsyncClient, token: str, **params: Any) -> httpx.Response:
    return await client.get("/audit", params=params, headers=bearer(token))


async def test_admin_filters_by_actor_action_and_time_and_pages(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    for i in range(5):
        await audit.record(
            ctx.pool, org_id=org.id, actor="robot", action="strategy.changed", details={"i": i}
        )
    await audit.record(ctx.pool, org_id=org.id, actor="someone", action="limit.changed")
    admin = (await login(client, org.admin))["access_token"]

    by_actor = (await audit_page(client, admin, actor="robot")).json()
    assert [e["details"]["i"] for e in by_actor["items"]] == [4, 3, 2, 1, 0]

    page1 = (await audit_page(client, admin, actor="robot", limit=2)).json()
    page2 = (
        await audit_page(client, admin, actor="robot", limit=2, before_id=page1["next_before_id"])
    ).json()
    page3 = (
        await audit_page(client, admin, actor="robot", limit=2, before_id=page2["next_before_id"])
    ).json()
    assert [e["details"]["i"] for e in page1["items"] + page2["items"] + page3["items"]] == [4, 3, 2, 1, 0]
    assert page3["next_before_id"] is None

    assert {
        e["action"] for e in (await audit_page(client, admin, action="limit.changed")).json()["items"]
    } == {"limit.changed"}
    auth_actions = {e["action"] for e in (await audit_page(client, admin, action="auth.*")).json()["items"]}
    assert auth_actions == {"auth.login"}

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert (await audit_page(client, admin, since=future)).json()["items"] == []
    assert (
        len((await audit_page(client, admin, since=past, until=future, actor="robot")).json()["items"]) == 5
    )


async def test_audit_is_admin_only_and_scoped_to_the_org(
    client: httpx.AsyncClient, org: Org, make_org: Any, ctx: UserContext
) -> None:
    await audit.record(ctx.pool, org_id=org.id, actor="robot", action="secret.thing")
    operator = (await login(client, org.operator))["access_token"]
    assert (await audit_page(client, operator)).status_code == 403
    other = await make_org()
    other_admin = (await login(client, other.admin))["access_token"]
    items = (await audit_page(client, other_admin, limit=500)).json()["items"]
    assert all(e["org_id"] == str(other.id) for e in items)
    assert "secret.thing" not in {e["action"] for e in items}


async def wait_for_rows(
    ctx: UserContext, org_id: uuid.UUID, action: str, n: int, timeout_s: float = 10
) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with ctx.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM audit_log WHERE org_id = %s AND action = %s ORDER BY id", (org_id, action)
            )
            rows = await cur.fetchall()
        if len(rows) >= n or asyncio.get_running_loop().time() > deadline:
            return list(rows)
        await asyncio.sleep(0.1)


async def test_events_from_other_services_land_in_the_audit_log_once(org: Org, ctx: UserContext) -> None:
    bus = EventBus(RabbitSettings(url=SecretStr(TEST_RABBIT_URL)), source="/services/trading")
    bus.start()
    try:
        await bus.wait_connected(10)
        now = datetime.now(UTC)
        recorded = make_event(
            EventType.AUDIT_RECORDED,
            AuditRecorded(
                org_id=org.id,
                actor=str(org.operator.id),
                action="strategy.changed",
                target="strategy:1",
                details={"from": "self_consumption", "to": "arbitrage"},
                at=now,
            ),
            source="/services/trading",
        )
        await bus.publish(recorded)
        await bus.publish(recorded)  # redelivered duplicate: stored once
        command = make_event(
            EventType.COMMAND_REQUESTED,
            CommandRequested(
                command_id=uuid.uuid4(),
                org_id=org.id,
                site_id=uuid.uuid4(),
                device_id=uuid.uuid4(),
                type="set_battery_power",
                params={"battery_power_w": -2500},
                expires_at=now + timedelta(minutes=5),
                requested_by=str(org.operator.id),
            ),
            source="/services/trading",
        )
        await bus.publish(command)
        # Sentinel: published after the duplicate, so once it is stored the duplicate has been handled.
        sentinel = make_event(
            EventType.AUDIT_RECORDED,
            AuditRecorded(org_id=org.id, actor="test", action="test.sentinel", at=now),
            source="/services/trading",
        )
        await bus.publish(sentinel)
    finally:
        await bus.close()

    rows = await wait_for_rows(ctx, org.id, "strategy.changed", 1)
    assert len(rows) == 1
    assert rows[0]["actor"] == str(org.operator.id) and rows[0]["source"] == "/services/trading"
    assert rows[0]["details"]["to"] == "arbitrage" and rows[0]["event_id"] == recorded.id
    commands = await wait_for_rows(ctx, org.id, "command.requested", 1)
    assert commands[0]["details"]["type"] == "set_battery_power"
    assert commands[0]["target"].startswith("device:")
    assert len(await wait_for_rows(ctx, org.id, "test.sentinel", 1)) == 1
    assert len(await wait_for_rows(ctx, org.id, "strategy.changed", 2, timeout_s=0)) == 1
