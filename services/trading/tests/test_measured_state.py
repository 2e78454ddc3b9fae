"""Plans start from the battery's measured state (``site.state_measured`` through the broker); a stale
or missing measurement is a reason on the schedule, never a silent 50 %; measurements become the slot's
actuals (planned vs actual), once per event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import EventType, SiteStateMeasured, make_event
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TestIssuer, bearer, eventually
from nattery_trading.measured.consumers import SiteStateConsumer
from nattery_trading.measured.repository import MeasuredStates
from nattery_trading.measured.service import MeasuredStateService
from nattery_trading.schedules.inputs import floor_slot
from nattery_trading.schedules.repository import ScheduleRepository
from nattery_trading.schedules.service import PlanningService

pytestmark = pytest.mark.timeout(120)

BATTERY = {
    "capacity_kwh": 10,
    "max_charge_kw": 5,
    "max_discharge_kw": 5,
    "soc_min_pct": 10,
    "soc_max_pct": 90,
}


def state(
    org: uuid.UUID, site: uuid.UUID, end: datetime, soc: float | None, **powers: float
) -> SiteStateMeasured:
    return SiteStateMeasured(
        org_id=org,
        site_id=site,
        measured_at=end - timedelta(seconds=1),
        window_start=end - timedelta(seconds=60),
        window_end=end,
        soc_pct=soc,
        battery_power_w=powers.get("battery_power_w", -1500.0),
        load_power_w=powers.get("load_power_w", 800.0),
        pv_power_w=powers.get("pv_power_w", 0.0),
        grid_power_w=powers.get("grid_power_w", 2300.0),
        samples=60,
        devices=1,
    )


async def configure(
    client: httpx.AsyncClient, pool: AsyncConnectionPool, register_site: Any, org: uuid.UUID
) -> uuid.UUID:
    site: uuid.UUID = await register_site(pool, org)
    admin = bearer_for(org, "admin")
    assert (await client.put(f"/sites/{site}/battery", headers=admin, json=BATTERY)).status_code == 200
    for direction, price in (("import", 25), ("export", 15)):
        t = await client.post(
            "/tariffs",
            headers=admin,
            json={"name": direction, "direction": direction, "kind": "fixed", "fixed_p_per_kwh": price},
        )
        r = await client.put(
            f"/sites/{site}/tariffs/{direction}", headers=admin, params={"tariff_id": t.json()["tariff_id"]}
        )
        assert r.status_code == 204, r.text
    return site


_ISSUER: list[TestIssuer] = []


def bearer_for(org: uuid.UUID, role: str) -> dict[str, str]:
    return bearer(_ISSUER[0], org, role)


@pytest.fixture(autouse=True)
def _issuer(test_issuer: TestIssuer) -> Any:
    _ISSUER[:] = [test_issuer]
    yield
    _ISSUER.clear()


async def test_plan_starts_from_the_measured_soc_and_actuals_follow(
    client: httpx.AsyncClient, pool: AsyncConnectionPool, bus: EventBus, register_site: Any
) -> None:
    org = uuid.uuid4()
    site = await configure(client, pool, register_site, org)
    viewer, operator = bearer_for(org, "viewer"), bearer_for(org, "operator")

    # No measurement yet: the plan says what it assumed (the middle of the SOC window), not a silent 50 %.
    r = await client.post(f"/sites/{site}/plan", headers=operator)
    assert r.status_code == 200, r.text
    start = r.json()["forecast"]["initial_state"]
    assert start["source"] == "assumed" and start["soc_pct"] == 50.0 and "no SOC measured" in start["reason"]

    # device-service's site.state_measured arrives through the broker (trading.site_states).
    now = datetime.now(UTC)
    await bus.publish(
        make_event(
            EventType.SITE_STATE_MEASURED, state(org, site, now, 83.0, load_power_w=1200.0), source="/t"
        )
    )

    async def measured() -> dict[str, Any] | None:
        r = await client.post(f"/sites/{site}/plan", headers=operator)
        body: dict[str, Any] = r.json()
        return body if body["forecast"]["initial_state"]["source"] == "measured" else None

    plan = await eventually(measured)
    start = plan["forecast"]["initial_state"]
    assert start["soc_pct"] == 83.0 and start["from"] == "site.state_measured"
    assert "SOC 83.0% measured" in plan["forecast"]["summary"]
    assert start["load_anchor"]["measured_kw"] == 1.2 and start["load_anchor"]["slots"] >= 1
    got = await client.get(f"/sites/{site}/schedule", headers=viewer)
    assert got.json()["forecast"]["initial_state"]["soc_pct"] == 83.0

    # The measurement is the slot's actual: planned vs actual shows it.
    slot = floor_slot(now - timedelta(seconds=30), 30)
    r = await client.get(
        f"/sites/{site}/schedule/compare",
        headers=viewer,
        params={"from": slot.isoformat(), "to": (slot + timedelta(minutes=30)).isoformat()},
    )
    assert r.status_code == 200, r.text
    (row,) = r.json()
    assert row["actual_battery_power_kw"] == pytest.approx(-1.5) and row["actual_soc_pct"] == 83.0


async def test_stale_measurement_is_a_reason_on_the_plan(
    client: httpx.AsyncClient, pool: AsyncConnectionPool, bus: EventBus, register_site: Any
) -> None:
    org = uuid.uuid4()
    site = await configure(client, pool, register_site, org)
    old = datetime.now(UTC) - timedelta(minutes=20)
    await bus.publish(make_event(EventType.SITE_STATE_MEASURED, state(org, site, old, 37.0), source="/t"))
    states = MeasuredStates(pool)
    await eventually(lambda: states.latest(site))
    r = await client.post(f"/sites/{site}/plan", headers=bearer_for(org, "operator"))
    start = r.json()["forecast"]["initial_state"]
    assert start["source"] == "stale" and start["soc_pct"] == 37.0
    assert "stale" in start["reason"] and "20 min" in start["reason"]
    assert "load_anchor" not in start  # a stale measurement does not steer the forecast


async def test_states_are_applied_once_and_fold_into_the_slot(
    pool: AsyncConnectionPool, register_site: Any, client: httpx.AsyncClient
) -> None:
    org = uuid.uuid4()
    site = await configure(client, pool, register_site, org)
    consumer = SiteStateConsumer(
        MeasuredStateService(MeasuredStates(pool), PlanningService(ScheduleRepository(pool), None))
    )
    slot = floor_slot(datetime.now(UTC), 30) - timedelta(minutes=30)
    first = make_event(
        EventType.SITE_STATE_MEASURED,
        state(org, site, slot + timedelta(minutes=1), 50.0, battery_power_w=-1000.0),
        source="/t",
    )
    second = make_event(
        EventType.SITE_STATE_MEASURED,
        state(org, site, slot + timedelta(minutes=3), 52.0, battery_power_w=-3000.0),
        source="/t",
    )
    for ev in (first, second, first):  # the first one redelivered
        await consumer.on_state(ev)
    rows = await ScheduleRepository(pool).planned_vs_actual(site, slot, slot + timedelta(minutes=30))
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT battery_power_kw, soc_pct, measured_s FROM actuals WHERE site_id = %s AND start_at = %s",
            (site, slot),
        )
        actual = await cur.fetchone()
    assert actual is not None and rows == []  # nothing planned back then; the actual is there
    power, soc, seconds = actual if isinstance(actual, tuple) else tuple(actual.values())
    assert power == pytest.approx(-2.0) and soc == 52.0 and seconds == 120.0

    # another org's state for the site is not applied
    other = make_event(
        EventType.SITE_STATE_MEASURED,
        state(uuid.uuid4(), site, slot + timedelta(minutes=5), 99.0),
        source="/t",
    )
    await consumer.on_state(other)
    latest = await MeasuredStates(pool).latest(site)
    assert latest is not None and latest.soc_pct == 52.0
