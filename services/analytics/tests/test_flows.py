"""Energy flows against the real servers: telemetry written to InfluxDB as the device service stores it
(measurement ``inverter``, tags org/site/device), the rollup job run with a chosen time, the hourly rows
in PostgreSQL, and the figures read through the API with real tokens.

Each test has a day of its own in January 2025 (Europe/London, the default flows timezone, is UTC then)
and an org of its own, so one test's refresh never changes another's figures."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from nattery_analytics.flows.service import FlowService
from nattery_shared.influx import InfluxClient, line
from nattery_shared.testing import TestIssuer, bearer

H = timedelta(hours=1)


@dataclass(frozen=True)
class Device:
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID

    @classmethod
    def new(cls) -> Device:
        return cls(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())

    @property
    def tags(self) -> dict[str, str]:
        return {"org": str(self.org_id), "site": str(self.site_id), "device": str(self.device_id)}


def every(
    start: datetime, end: datetime, step_s: float, skip: Callable[[datetime], bool] = lambda t: False
) -> Iterable[datetime]:
    """``start``, ``start + step`` ... up to and including ``end``, leaving out what ``skip`` says."""
    t = start
    while t <= end:
        if not skip(t):
            yield t
        t += timedelta(seconds=step_s)


async def write(
    influx: InfluxClient, device: Device, points: Iterable[tuple[datetime, dict[str, float]]]
) -> None:
    lines = [line("inverter", device.tags, values, t) for t, values in points]
    for i in range(0, len(lines), 5000):
        await influx.write_lines(lines[i : i + 5000])


def floor01(kwh: float) -> float:
    """The Deye/Sunsynk counters' 0.1 kWh register step (the simulator floors the same way)."""
    return int(kwh * 10 + 1e-9) / 10


async def site_flows(
    client: httpx.AsyncClient,
    issuer: TestIssuer,
    device: Device,
    start: datetime,
    end: datetime,
    interval: str,
) -> dict[str, Any]:
    r = await client.get(
        f"/sites/{device.site_id}/flows",
        params={"from": start.isoformat(), "to": end.isoformat(), "interval": interval},
        headers=bearer(issuer, device.org_id, role="viewer"),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def stored_rows(pool: AsyncConnectionPool, device: Device) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM flow_hours WHERE device_id = %s ORDER BY hour", (device.device_id,)
        )
        rows = await cur.fetchall()
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in rows]


async def test_daily_counters_with_a_midnight_reset_give_the_day_total(
    client: httpx.AsyncClient, influx: InfluxClient, flows: FlowService, test_issuer: TestIssuer
) -> None:
    """Daily counters only (no lifetime counter), sampled each minute, falling to zero at midnight; grid
    power disagrees on purpose (1 kW against the counter's 1.5 kWh/h): the counter wins."""
    day = datetime(2025, 1, 6, tzinfo=UTC)
    device = Device.new()

    def counters(t: datetime) -> dict[str, float]:
        since_midnight_h = (t - t.replace(hour=0, minute=0, second=0)).total_seconds() / 3600
        return {
            "grid_import_energy_today_kwh": floor01(1.5 * since_midnight_h),
            "pv_energy_today_kwh": floor01(0.5 * since_midnight_h),
            "grid_power_w": 1000.0,
        }

    await write(influx, device, ((t, counters(t)) for t in every(day - 2 * H, day + 26 * H, 60)))
    report = await flows.refresh(day + 26 * H + timedelta(minutes=30))
    assert report is not None and report.hours >= 24

    body = await site_flows(client, test_issuer, device, day, day + 24 * H, "day")
    [point] = body["total"]
    grid = point["grid_import"]
    # The day's last minute before the reset and the register's floor: at most one step (0.1 kWh) short.
    assert grid["kwh"] == pytest.approx(36.0, abs=0.1 + 1e-6)
    assert grid["source"] == "counter" and grid["coverage"] == 1.0 and grid["missing_s"] == 0
    assert point["pv"]["kwh"] == pytest.approx(12.0, abs=0.1 + 1e-6)

    hours = (await site_flows(client, test_issuer, device, day - 2 * H, day + 2 * H, "hour"))["total"]
    # Around the reset every hour is about 1.5 kWh (one register step either way), none negative or huge.
    assert [p["grid_import"]["kwh"] == pytest.approx(1.5, abs=0.1 + 1e-6) for p in hours] == [True] * 4


async def test_power_only_integrates_each_part(
    client: httpx.AsyncClient, influx: InfluxClient, flows: FlowService, test_issuer: TestIssuer
) -> None:
    """5-second power, no counters: trapezoids, import and export apart, charge and discharge apart."""
    day = datetime(2025, 1, 13, tzinfo=UTC)
    device = Device.new()

    def values(t: datetime) -> dict[str, float]:
        h = (t - day).total_seconds() / 3600
        out = {
            "load_power_w": 800.0,
            "battery_power_w": 2000.0 if h < 12 else -1500.0,
            "pv_power_w": 3000.0 if 10 <= h < 14 else 0.0,
            # 03:00-04:00: import falling linearly from 3 kW to an export of 3 kW, else 500 W import
            "grid_power_w": 3000.0 - 6000.0 * (h - 3) if 3 <= h <= 4 else 500.0,
        }
        return out

    await write(influx, device, ((t, values(t)) for t in every(day, day + 24 * H, 5)))
    await flows.refresh(day + 25 * H)

    [point] = (await site_flows(client, test_issuer, device, day, day + 24 * H, "day"))["total"]
    assert point["load"]["kwh"] == pytest.approx(19.2, abs=1e-3)
    assert point["load"]["source"] == "power" and point["load"]["coverage"] == 1.0
    # The 2 kW -> -1.5 kW step at noon is one 5 s segment, shared by the two parts as its line crosses zero.
    assert point["battery_discharge"]["kwh"] == pytest.approx(24.0, abs=0.01)
    assert point["battery_charge"]["kwh"] == pytest.approx(18.0, abs=0.01)
    assert point["pv"]["kwh"] == pytest.approx(12.0, abs=0.01)
    # 23 hours of 0.5 kWh (the edges of the ramp hour step from 500 W) plus the ramp's two triangles.
    assert point["grid_import"]["kwh"] == pytest.approx(23 * 0.5 + 0.75, abs=0.01)
    assert point["grid_export"]["kwh"] == pytest.approx(0.75, abs=0.01)

    hours = (await site_flows(client, test_issuer, device, day + 3 * H, day + 4 * H, "hour"))["total"]
    assert hours[0]["grid_import"]["kwh"] == pytest.approx(0.75, abs=1e-3)
    assert hours[0]["grid_export"]["kwh"] == pytest.approx(0.75, abs=1e-3)

    [month] = (await site_flows(client, test_issuer, device, day, day + 24 * H, "month"))["total"]
    assert month["load"]["kwh"] == pytest.approx(19.2, abs=1e-3)
    assert (month["start"], month["end"]) == ("2025-01-13T00:00:00Z", "2025-01-14T00:00:00Z")  # clipped


async def test_a_site_offline_for_two_hours_shows_missing_coverage_not_less_energy(
    client: httpx.AsyncClient, influx: InfluxClient, flows: FlowService, test_issuer: TestIssuer
) -> None:
    day = datetime(2025, 1, 20, tzinfo=UTC)
    device = Device.new()

    def offline(t: datetime) -> bool:
        return day + 10 * H < t < day + 12 * H

    start_total = 9000.0
    power = ((t, {"load_power_w": 1200.0, "pv_power_w": 0.0}) for t in every(day, day + 24 * H, 5, offline))
    counter = (
        (t, {"load_energy_total_kwh": floor01(start_total + 1.2 * (t - day).total_seconds() / 3600)})
        for t in every(day, day + 24 * H, 60, offline)
    )
    await write(influx, device, power)
    await write(influx, device, counter)
    await flows.refresh(day + 25 * H)

    [point] = (await site_flows(client, test_issuer, device, day, day + 24 * H, "day"))["total"]
    load = point["load"]
    assert load["missing_s"] == 7200 and load["covered_s"] == 22 * 3600
    assert load["coverage"] == pytest.approx(22 / 24, abs=1e-4)
    assert load["kwh"] == pytest.approx(22 * 1.2, abs=0.2)  # 22 covered hours; two register steps at most
    assert point["pv"]["kwh"] == 0 and point["pv"]["missing_s"] == 7200  # zero PV seen is zero, the gap a gap

    hours = (await site_flows(client, test_issuer, device, day + 9 * H, day + 13 * H, "hour"))["total"]
    assert [p["load"]["missing_s"] for p in hours] == [0, 3600, 3600, 0]
    assert [p["load"]["kwh"] for p in hours][1:3] == [None, None]
    assert [p["load"]["coverage"] for p in hours] == [1.0, 0.0, 0.0, 1.0]
    assert hours[0]["load"]["kwh"] == pytest.approx(1.2, abs=0.1 + 1e-6)
    assert hours[3]["load"]["kwh"] == pytest.approx(1.2, abs=0.1 + 1e-6)


async def test_a_late_backfill_recomputes_yesterday_idempotently(
    client: httpx.AsyncClient,
    influx: InfluxClient,
    flows: FlowService,
    pool: AsyncConnectionPool,
    test_issuer: TestIssuer,
) -> None:
    day = datetime(2025, 1, 27, tzinfo=UTC)
    now = day + 25 * H + timedelta(minutes=20)  # "today", 01:20: yesterday is `day`
    device = Device.new()

    def hole(t: datetime) -> bool:
        return day + 6 * H < t < day + 9 * H

    def values(t: datetime) -> dict[str, float]:
        return {"battery_power_w": -2000.0 if t < day + 12 * H else 1000.0, "grid_power_w": 400.0}

    await write(influx, device, ((t, values(t)) for t in every(day, day + 24 * H, 5, hole)))
    first = await flows.refresh(now)
    assert first is not None and first.hours > 0
    [before] = (await site_flows(client, test_issuer, device, day, day + 24 * H, "day"))["total"]
    assert before["battery_charge"]["missing_s"] == 3 * 3600
    assert before["battery_charge"]["kwh"] == pytest.approx(9 * 2.0, abs=0.01)

    # The bridge replays its outbox: the three hours arrive a day late, with their original timestamps.
    await write(influx, device, ((t, values(t)) for t in every(day + 6 * H, day + 9 * H, 5)))
    backfill = await flows.refresh(now)
    assert backfill is not None and backfill.hours == 5  # the three hours and the two they border
    [after] = (await site_flows(client, test_issuer, device, day, day + 24 * H, "day"))["total"]
    assert after["battery_charge"]["missing_s"] == 0 and after["battery_charge"]["coverage"] == 1.0
    assert after["battery_charge"]["kwh"] == pytest.approx(12 * 2.0, abs=0.01)
    assert after["battery_discharge"]["kwh"] == pytest.approx(12 * 1.0, abs=0.01)
    assert after["grid_import"]["kwh"] == pytest.approx(24 * 0.4, abs=0.01)
    rows = await stored_rows(pool, device)
    assert len(rows) == 25  # the day's hours and the next one's first point

    # Nothing new: nothing recomputed. Recomputing everything anyway (by hand, or a second replica that
    # raced the first) writes the same rows.
    again = await flows.refresh(now)
    assert again is not None and again.hours == 0
    forced = await flows.refresh(now, force=True)
    assert forced is not None and forced.hours >= 24
    assert await stored_rows(pool, device) == rows


async def test_another_org_sees_nothing_of_a_site(
    client: httpx.AsyncClient, influx: InfluxClient, flows: FlowService, test_issuer: TestIssuer
) -> None:
    day = datetime(2025, 2, 3, tzinfo=UTC)
    device = Device.new()
    await write(influx, device, ((t, {"load_power_w": 500.0}) for t in every(day, day + 3 * H, 5)))
    await flows.refresh(day + 4 * H)
    params = {"from": day.isoformat(), "to": (day + 3 * H).isoformat(), "interval": "hour"}

    own = await client.get("/flows", params=params, headers=bearer(test_issuer, device.org_id, role="viewer"))
    assert own.status_code == 200, own.text
    assert [s["site_id"] for s in own.json()["sites"]] == [str(device.site_id)]
    assert own.json()["total"][0]["load"]["kwh"] == pytest.approx(0.5, abs=1e-3)

    other = bearer(test_issuer, uuid.uuid4(), role="admin")
    r = await client.get(f"/sites/{device.site_id}/flows", params=params, headers=other)
    assert r.status_code == 404
    r = await client.get("/flows", params=params, headers=other)
    assert r.status_code == 200
    assert str(device.site_id) not in r.text and str(device.device_id) not in r.text
    assert r.json()["sites"] == [] and r.json()["total"][0]["load"]["kwh"] is None

    r = await client.get(f"/sites/{device.site_id}/flows", params=params)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2025-02-03T05:00:00Z", "to": "2025-02-03T01:00:00Z"}, "`to` must be after `from`"),
        (
            {"from": "2025-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z", "interval": "hour"},
            "at most 31 days",
        ),
        (
            {"from": "2020-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z", "interval": "day"},
            "at most 400 days",
        ),
        ({"interval": "week"}, "interval"),
        ({"from": "2025-02-03T05:00:00"}, "from"),  # no offset: which 05:00?
        ({"from": "1970-01-01T00:00:00Z"}, "between the years"),
    ],
)
async def test_bad_ranges_are_refused_precisely(
    client: httpx.AsyncClient, test_issuer: TestIssuer, params: dict[str, str], message: str
) -> None:
    r = await client.get("/flows", params=params, headers=bearer(test_issuer, uuid.uuid4(), role="viewer"))
    assert r.status_code == 422, r.text
    assert message in r.text


async def test_an_ended_hour_is_computed_once_while_the_next_fills(
    client: httpx.AsyncClient, influx: InfluxClient, flows: FlowService, test_issuer: TestIssuer
) -> None:
    """Runs every few minutes recompute only what changed: the hour that ended is stored, and not again
    once the next hour's first quarter (which its last segment reaches into) is in."""
    day = datetime(2025, 2, 10, tzinfo=UTC)
    device = Device.new()

    async def live(start: datetime, end: datetime) -> None:
        await write(influx, device, ((t, {"load_power_w": 600.0}) for t in every(start, end, 5)))

    await live(day, day + 2 * H + timedelta(minutes=20))
    first = await flows.refresh(day + 2 * H + timedelta(minutes=20))
    assert first is not None and first.hours == 2  # 00:00 and 01:00; 02:00 has not ended
    await live(day + 2 * H + timedelta(minutes=20), day + 2 * H + timedelta(minutes=50))
    later = await flows.refresh(day + 2 * H + timedelta(minutes=50))
    assert later is not None and later.hours == 0
    await live(day + 2 * H + timedelta(minutes=50), day + 3 * H + timedelta(minutes=10))
    ended = await flows.refresh(day + 3 * H + timedelta(minutes=10))
    assert ended is not None and ended.hours == 1

    hours = (await site_flows(client, test_issuer, device, day, day + 3 * H, "hour"))["total"]
    assert [p["load"]["kwh"] for p in hours] == [pytest.approx(0.6, abs=1e-6)] * 3
    assert [p["load"]["coverage"] for p in hours] == [1.0, 1.0, 1.0]
