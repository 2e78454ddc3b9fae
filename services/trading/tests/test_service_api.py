"""The trading service end to end in process: events in, schedules out, e-stops, dispatches, org scope."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from nattery_contracts.events import (
    CloudEvent,
    DispatchReceived,
    EventType,
    MarketPricesUpdated,
    PricePoint,
    make_event,
)
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_shared.testing import TestIssuer, bearer, eventually
from nattery_trading.settings import TradingSettings

pytestmark = pytest.mark.timeout(120)


async def test_site_planning_flow(
    client: httpx.AsyncClient,
    test_issuer: TestIssuer,
    bus: EventBus,
    make_device_registered: Callable[..., CloudEvent[Any]],
) -> None:
    org, site = uuid.uuid4(), uuid.uuid4()
    admin, operator, viewer = (bearer(test_issuer, org, r) for r in ("admin", "operator", "viewer"))
    market, region = "test-market", f"R{uuid.uuid4().hex[:8]}"
    battery = {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5}

    # not registered by device-service yet: trading does not know the site
    r = await client.put(f"/sites/{site}/battery", headers=admin, json=battery)
    assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "site_not_registered"}, r.text
    # device-service registers a device on it → trading's trading.sites consumer learns the site's org
    await bus.publish(make_device_registered(org, site))

    async def configured() -> httpx.Response | None:
        r = await client.put(f"/sites/{site}/battery", headers=admin, json=battery)
        return r if r.status_code != 404 else None

    r = await eventually(configured)
    assert r.status_code == 200, r.text
    imp = await client.post(
        "/tariffs",
        headers=admin,
        json={"name": "agile", "direction": "import", "kind": "dynamic", "market": market, "region": region},
    )
    exp_ = await client.post(
        "/tariffs",
        headers=admin,
        json={"name": "flat export", "direction": "export", "kind": "fixed", "fixed_p_per_kwh": 15},
    )
    assert imp.status_code == 201 and exp_.status_code == 201, imp.text + exp_.text
    for direction, t in (("import", imp), ("export", exp_)):
        r = await client.put(
            f"/sites/{site}/tariffs/{direction}", headers=admin, params={"tariff_id": t.json()["tariff_id"]}
        )
        assert r.status_code == 204, r.text

    published: list[CloudEvent[Any]] = []

    async def collect(ev: CloudEvent[Any]) -> None:
        if ev.subject == str(site):
            published.append(ev)

    await bus.consume(
        QueueSpec(f"tests.trading.{uuid.uuid4().hex[:8]}", ["schedule.published", "dispatch.status_changed"]),
        collect,
    )
    # prices arrive → the site is re-planned and its schedule published
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    points = [
        PricePoint(
            start=now + timedelta(minutes=30 * i),
            end=now + timedelta(minutes=30 * (i + 1)),
            price_p_per_kwh=(-2.0 if 4 <= i < 8 else 30.0),
        )
        for i in range(-48, 48)
    ]
    await bus.publish(
        make_event(
            EventType.MARKET_PRICES_UPDATED,
            MarketPricesUpdated(
                market=market, region=region, direction="import", prices=points, published_at=now
            ),
            source="/tests",
        )
    )

    async def schedule() -> dict[str, Any] | None:
        r = await client.get(f"/sites/{site}/schedule", headers=viewer)
        return r.json() if r.status_code == 200 else None

    first = await eventually(schedule)
    assert "prices updated" in first["trigger"]
    negative = [s for s in first["slots"] if s["import_p_per_kwh"] < 0]
    assert negative and all(s["battery_power_kw"] < 0 for s in negative)
    assert any("negative" in s["reason"] for s in negative)
    await eventually(lambda: asyncio.sleep(0, [e for e in published if e.type == "schedule.published"]))
    ev = next(e for e in published if e.type == "schedule.published")
    assert ev.data.version == first["version"] and ev.data.valid_until <= now + timedelta(hours=3)

    # other orgs see nothing
    other = bearer(test_issuer, uuid.uuid4(), "admin")
    assert (await client.get(f"/sites/{site}/schedule", headers=other)).status_code == 404

    # emergency stop: hold until released
    r = await client.post(
        "/emergency-stops", headers=operator, json={"site_id": str(site), "reason": "fire drill"}
    )
    assert r.status_code == 201, r.text
    held = await schedule()
    assert held is not None and held["version"] > first["version"] and held["method"] == "hold"
    assert all(s["battery_power_kw"] == 0 and "emergency stop" in s["reason"] for s in held["slots"])
    assert (await client.get("/emergency-stops", headers=viewer)).json()[0]["reason"] == "fire drill"
    r = await client.delete(f"/emergency-stops/{r.json()['stop_id']}", headers=operator)
    assert r.status_code == 200 and r.json()["released_at"] is not None

    # the release re-plans through the work queue
    async def not_held() -> dict[str, Any] | None:
        s = await schedule()
        return s if s is not None and s["method"] != "hold" else None

    released = await eventually(not_held)
    assert released["trigger"] == "emergency stop released"

    # dispatches: beyond the battery's limits → rejected; within → accepted and followed
    start = now + timedelta(hours=10)
    for power_w in (9000.0, 3000.0):
        await bus.publish(
            make_event(
                EventType.DISPATCH_RECEIVED,
                DispatchReceived(
                    dispatch_id=uuid.uuid4(),
                    org_id=org,
                    site_id=site,
                    provider="axle",
                    battery_power_w=power_w,
                    start=start,
                    end=start + timedelta(hours=1),
                ),
                source="/tests",
            )
        )
    statuses = await eventually(
        lambda: asyncio.sleep(
            0,
            [e.data.status.value for e in published if e.type == "dispatch.status_changed"]
            if sum(e.type == "dispatch.status_changed" for e in published) >= 2
            else None,
        )
    )
    assert sorted(statuses) == ["accepted", "rejected"]

    async def dispatched() -> dict[str, Any] | None:
        s = await schedule()
        return s if s and any(x["reason"].startswith("dispatch:") for x in s["slots"]) else None

    got = await eventually(dispatched)
    followed = [x for x in got["slots"] if x["reason"].startswith("dispatch:")]
    assert len(followed) == 2 and all(x["battery_power_kw"] == pytest.approx(3.0) for x in followed)

    # planned vs actual
    slot0 = got["slots"][0]
    r = await client.post(
        f"/sites/{site}/actuals",
        headers=operator,
        json=[{"start_at": slot0["start_at"], "battery_power_kw": 1.5, "soc_pct": 55}],
    )
    assert r.status_code == 204, r.text
    r = await client.get(
        f"/sites/{site}/schedule/compare",
        headers=viewer,
        params={"from": slot0["start_at"], "to": got["slots"][2]["start_at"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["actual_battery_power_kw"] == 1.5


async def test_preview_plans_without_saving(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    body = {
        "start": "2022-06-01T00:00:00Z",
        "import_price_p_per_kwh": [20] * 4 + [40] * 4,
        "export_price_p_per_kwh": [5] * 8,
        "load_kw": [1] * 8,
        "pv_kw": [0] * 8,
        "initial_soc_pct": 50,
        "battery": {"capacity_kwh": 5, "max_charge_kw": 0, "max_discharge_kw": 3},
        "strategy": {"reserve_soc_pct": 80},
    }
    r = await client.post("/optimiser/plan", headers=bearer(test_issuer, uuid.uuid4(), "viewer"), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "Optimal" and len(out["reasons"]) == 8
    assert out["relaxations"] and out["relaxations"][0]["kind"] == "soc_below_min"
    assert (await client.post("/optimiser/plan", json=body)).status_code == 401


async def test_periodic_replan_refreshes_expiring_schedules(
    migrated: None, settings: TradingSettings, register_site: Any
) -> None:
    from nattery_shared import db
    from nattery_trading.app import SCHEMA
    from nattery_trading.dispatches.repository import DispatchRepository
    from nattery_trading.schedules.repository import ScheduleRepository
    from nattery_trading.schedules.service import PlanningService
    from nattery_trading.sites.repository import SiteRepository
    from nattery_trading.tariffs.repository import TariffRepository

    pool = db.create_pool(settings.postgres, schema=SCHEMA, name="trading-tests")
    await db.open_pool(pool)
    try:
        repo = ScheduleRepository(pool)
        org = uuid.uuid4()
        site = await register_site(pool, org)
        await SiteRepository(pool).upsert(
            org,
            site,
            {
                "timezone": "Europe/London",
                "capacity_kwh": 10,
                "max_charge_kw": 5,
                "max_discharge_kw": 5,
                "charge_efficiency": 0.95,
                "discharge_efficiency": 0.95,
                "soc_min_pct": 10,
                "soc_max_pct": 100,
                "degradation_p_per_kwh": 2,
                "import_limit_kw": None,
                "export_limit_kw": None,
            },
        )
        tariff = await TariffRepository(pool).create(
            org,
            {
                "name": "tou",
                "direction": "import",
                "kind": "time_of_use",
                "rates": [
                    {"start_local": "00:30", "end_local": "07:30", "p_per_kwh": 9.0},
                    {"start_local": "07:30", "end_local": "00:30", "p_per_kwh": 32.0},
                ],
            },
        )
        await TariffRepository(pool).assign(site, "import", tariff.tariff_id)
        planning = PlanningService(repo, None, schedule_validity_h=2.0)
        now = datetime.now(UTC)
        past = uuid.uuid4()
        await DispatchRepository(pool).insert(
            {
                "dispatch_id": past,
                "org_id": org,
                "site_id": site,
                "provider": "axle",
                "battery_power_kw": 2.0,
                "start_at": now - timedelta(hours=2),
                "end_at": now - timedelta(hours=1),
                "status": "accepted",
                "reason": None,
            }
        )
        await planning.replan_due(now)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM dispatches WHERE dispatch_id = %s", (past,))
            row: Any = await cur.fetchone()
        assert row["status"] == "executed"
        first = await repo.latest_schedule(site)
        assert first is not None and first.head.trigger == "periodic re-plan"
        assert any("cheapest" in s.reason for s in first.slots) or any(
            s.battery_power_kw for s in first.slots
        )
        await planning.replan_due(now)  # still valid for 2 h: not due
        again = await repo.latest_schedule(site)
        assert again is not None and again.head.version == first.head.version
        await planning.replan_due(now + timedelta(hours=1, minutes=30))  # expires within the margin
        later = await repo.latest_schedule(site)
        assert later is not None and later.head.version == first.head.version + 1
    finally:
        await pool.close()
