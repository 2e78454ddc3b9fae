"""The time factor (issue 14): physics, energy counters and the inverter clock run N times faster than
wall time, the serial line does not.

In-process tests inject the wall clock into :class:`SimClock` (a fake monotonic the test moves) and
drive the slave as its physics loop does (``tick`` every ``--tick-s`` of wall time). The tests over a
real pty measure wall time, because there the passage of wall time is the behaviour under test; they
wait for a simulated instant, never for a duration.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nattery_contracts.modbus import decode, encode, load_profile
from nattery_sim.clock import SimClock, substeps, time_factor
from nattery_sim.devices import BatteryConfig, DeyeInverter
from nattery_sim.profiles import SiteProfile
from nattery_sim.server import RtuSlave
from nattery_sim.testing import RtuMaster, SimProcess, decode_response, read_request, wait_for

DEYE = load_profile("deye-sunsynk-1ph")
COUNTERS = ("battery_charge", "battery_discharge", "grid_import", "grid_export", "load", "pv")
FACTOR = 720.0  # a simulated day in two wall minutes
TICK_S = 0.25  # the slave's default physics period, wall seconds


@dataclass
class FakeMonotonic:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


def clock_of(regs: dict[int, int]) -> datetime:
    v = {k: int(x) for k, x in decode(DEYE, 22, [regs[22], regs[23], regs[24]]).items()}
    return datetime(
        v["clock_year"], v["clock_month"], v["clock_day"], v["clock_hour"], v["clock_minute"],
        v["clock_second"], tzinfo=UTC,
    )  # fmt: skip


async def read(slave: RtuSlave, address: int, count: int) -> dict[int, int]:
    """An FC03 read answered by the slave as over the wire (no wire timing)."""
    reply = await slave.reply_for(read_request(1, address, count))
    assert reply is not None
    pdu = decode_response(reply)
    return dict(zip(range(address, address + count), pdu.registers, strict=True))


def make_site(start: datetime, factor: float, **cfg: Any) -> tuple[DeyeInverter, RtuSlave, FakeMonotonic]:
    site = SiteProfile(pv_kwp=cfg.pop("pv_kwp", 4.0), load_scale=cfg.pop("load_scale", 1.0))
    device = DeyeInverter(DEYE, BatteryConfig(**cfg), site)
    mono = FakeMonotonic()
    slave = RtuSlave(device, "unused", clock=SimClock(start, factor, monotonic=mono))
    slave.tick()
    return device, slave, mono


def load_kwh(site: SiteProfile, a: datetime, b: datetime, step_s: float = 10.0) -> float:
    """The household load integrated over [a, b] (what the load counters must show)."""
    n = max(1, math.ceil((b - a).total_seconds() / step_s))
    h = (b - a).total_seconds() / n
    return sum(site.load_w(a + timedelta(seconds=h * (k + 1))) for k in range(n)) * h / 3.6e6


# ------------------------------------------------------------------ the clock


def test_sim_clock_runs_factor_times_wall_time() -> None:
    mono = FakeMonotonic()
    start = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
    c = SimClock(start, FACTOR, monotonic=mono)
    assert c.now() == start
    mono.t += 10.0
    assert c.now() == start + timedelta(hours=2)
    c.set_factor(60.0)  # no jump, then the new speed
    assert c.now() == start + timedelta(hours=2)
    mono.t += 60.0
    assert c.now() == start + timedelta(hours=3)
    c.advance(1800)
    assert c.now() == start + timedelta(hours=3, minutes=30)
    c.set_factor(0)
    mono.t += 1e6
    assert c.now() == start + timedelta(hours=3, minutes=30)
    with pytest.raises(ValueError):
        c.set_factor(-1)
    for bad in ("-2", "nan", "inf", "fast"):
        with pytest.raises(Exception, match="time factor"):
            time_factor(bad)
    assert time_factor("720") == 720.0


def test_substeps_are_bounded_and_split_at_midnight() -> None:
    end = datetime(2026, 6, 23, 0, 2, 30, 123, tzinfo=UTC)
    dt = 2 * 86400 + 400.7
    steps = list(substeps(end, dt, 60.0))
    assert sum(h for _, _, h in steps) == pytest.approx(dt, abs=1e-6)
    assert steps[0][0] == end - timedelta(seconds=dt) and steps[-1][1] == end
    for (a, b, h), nxt in zip(steps, [*steps[1:], None], strict=True):
        assert 0 < h <= 60.0 + 1e-9
        assert (b - a).total_seconds() == pytest.approx(h, abs=2e-6)
        assert b.date() == a.date() or b.time() == datetime.min.time()  # ends at midnight at most
        if nxt is not None:
            assert nxt[0] == b
    midnights = [b for _, b, _ in steps if b.time() == datetime.min.time()]
    assert midnights == [datetime(2026, 6, d, tzinfo=UTC) for d in (21, 22, 23)]
    assert list(substeps(end, 30.0, 60.0)) == [(end - timedelta(seconds=30), end, 30.0)]  # whole
    assert list(substeps(end, 0.0, 60.0)) == []


async def test_reported_clock_advances_factor_times_wall_time() -> None:
    start = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
    _, slave, mono = make_site(start, FACTOR)
    assert clock_of(await read(slave, 22, 3)) == start
    for wall_s in (0.25, 0.5, 1.0, 7.5, 10.0):
        mono.t += wall_s
        got = clock_of(await read(slave, 22, 3))  # a read sees the instant it arrives at
        assert got == slave.clock.now().replace(microsecond=0)
    assert clock_of(await read(slave, 22, 3)) == start + timedelta(seconds=FACTOR * 19.25)
    # the physics loop's tick publishes the same clock
    mono.t += 0.25
    slave.tick()
    assert clock_of({a: slave.device.regs[a] for a in (22, 23, 24)}) == start + timedelta(
        seconds=FACTOR * 19.5
    )


# ------------------------------------------------------------------ a simulated day


async def test_accelerated_midnight_resets_today_and_totals_continue() -> None:
    start = datetime(2026, 6, 21, 20, 2, 30, tzinfo=UTC)  # ticks: 23:59:30, then 00:02:30
    device, slave, mono = make_site(start, FACTOR, start_soc_pct=60.0)
    site = device.site
    first = device.truth()
    samples: list[tuple[datetime, dict[str, float], dict[int, int]]] = []
    for _ in range(int(30 * 3600 / FACTOR / TICK_S)):  # 30 simulated hours, two midnights
        mono.t += TICK_S
        slave.tick()
        samples.append((slave.clock.now(), device.truth(), await read(slave, 0, 110)))
    midnights = 0
    for (t1, tr1, regs1), (t2, tr2, regs2) in itertools.pairwise(samples):
        for c in COUNTERS:  # totals never go back, in the registers too
            assert tr2[f"{c}_energy_total_kwh"] >= tr1[f"{c}_energy_total_kwh"]
        v1, v2 = decode(DEYE, 0, regs1), decode(DEYE, 0, regs2)
        assert clock_of(regs2) == t2.replace(microsecond=0)
        if t1.date() == t2.date():
            for c in COUNTERS:
                today = tr2[f"{c}_energy_today_kwh"] - tr1[f"{c}_energy_today_kwh"]
                total = tr2[f"{c}_energy_total_kwh"] - tr1[f"{c}_energy_total_kwh"]
                assert today == pytest.approx(total, abs=1e-9)
            continue
        midnights += 1
        midnight = datetime.combine(t2.date(), datetime.min.time(), tzinfo=UTC)
        # the step 23:59:30 -> 00:02:30 was split at midnight: today holds only the 150 s after it
        assert (t2 - midnight).total_seconds() == 150
        assert tr2["load_energy_today_kwh"] == pytest.approx(load_kwh(site, midnight, t2), rel=0.01)
        assert tr2["load_energy_total_kwh"] - tr1["load_energy_total_kwh"] == pytest.approx(
            load_kwh(site, t1, t2), rel=0.01
        )
        assert v2["load_energy_today_kwh"] < v1["load_energy_today_kwh"]  # the register resets
        assert v2["load_energy_total_kwh"] >= v1["load_energy_total_kwh"]
        assert (v2["clock_day"], v2["clock_hour"], v2["clock_minute"]) == (t2.day, 0, 2)
    assert midnights == 2
    # a whole simulated day (the 21st ran from 20:02:30): today's load just before midnight + the
    # sub-step to midnight; the totals carried on through both resets
    last = samples[-1][1]
    assert last["load_energy_total_kwh"] - first["load_energy_total_kwh"] == pytest.approx(
        load_kwh(site, start, samples[-1][0]), rel=0.01
    )
    day_22 = [tr for t, tr, _ in samples if t.date() == datetime(2026, 6, 22).date()]
    assert max(tr["load_energy_today_kwh"] for tr in day_22) == pytest.approx(
        load_kwh(site, datetime(2026, 6, 22, tzinfo=UTC), datetime(2026, 6, 23, tzinfo=UTC)), rel=0.01
    )


# ------------------------------------------------------------------ energy conservation


def put(d: DeyeInverter, name: str, value: float) -> None:
    p = DEYE[name]
    assert d.write(p.addresses[0], encode(p, value, current=d.regs[p.addresses[0]])) is None


SCENARIOS: dict[str, dict[str, Any]] = {
    # zero export (power-on default): the battery fills by noon, PV is curtailed, then empties at night
    "zero-export": {"cfg": {"capacity_kwh": 5.0, "pv_kwp": 6.0, "start_soc_pct": 20.0}, "writes": {}},
    # selling first: the surplus beyond a full battery is exported up to 2.5 kW, the rest curtailed
    "export": {
        "cfg": {"capacity_kwh": 5.0, "pv_kwp": 8.0, "start_soc_pct": 20.0, "load_scale": 1.5},
        "writes": {"work_mode": 0, "solar_sell_enabled": 1, "max_sell_power_w": 2500},
    },
}


def reported_w(d: DeyeInverter) -> dict[str, float]:
    """The powers in the registers (what a master reads), per counter, in W."""
    v = decode(DEYE, 0, {a: d.regs[a] for a in range(0, 200)})
    batt, grid = v["battery_power_w"], v["grid_power_w"]
    return {
        "battery_charge": max(-batt, 0.0),
        "battery_discharge": max(batt, 0.0),
        "grid_import": max(grid, 0.0),
        "grid_export": max(-grid, 0.0),
        "load": v["load_power_w"],
        "pv": v["pv1_power_w"] + v["pv2_power_w"],
    }


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_accelerated_day_counters_match_the_integral_of_power(scenario: str) -> None:
    sc = SCENARIOS[scenario]
    start = datetime(2026, 6, 21, 0, 0, 0, tzinfo=UTC)
    day_end = start + timedelta(days=1)

    # the reference: the same site in 10 s steps, the reported (register) power integrated
    ref = DeyeInverter(DEYE, BatteryConfig(**{k: v for k, v in sc["cfg"].items() if k not in ("pv_kwp", "load_scale")}),
                       SiteProfile(pv_kwp=sc["cfg"].get("pv_kwp", 4.0), load_scale=sc["cfg"].get("load_scale", 1.0)))  # fmt: skip
    for name, value in sc["writes"].items():
        put(ref, name, value)
    ref.tick(start, 0)
    integral_wh = dict.fromkeys(COUNTERS, 0.0)
    t = start
    while t < day_end:
        t += timedelta(seconds=10)
        ref.tick(t, 10.0)
        for c, w in reported_w(ref).items():  # the power reported at t is the power of (t - 10 s, t]
            integral_wh[c] += w * 10.0 / 3600.0

    # accelerated: a day in two wall minutes, the physics loop ticking every 0.25 s, with the event
    # loop stalling now and then (one 2.5 s stall is half a simulated hour of physics in one tick)
    device, slave, mono = make_site(start, FACTOR, **sc["cfg"])
    for name, value in sc["writes"].items():
        put(device, name, value)
    before = device.truth()
    soc_seen: list[float] = []
    k = 0
    while slave.clock.now() < day_end:
        k += 1
        wall = 2.5 if k % 97 == 0 else TICK_S
        mono.t += min(wall, (day_end - slave.clock.now()).total_seconds() / FACTOR)
        slave.tick()
        soc_seen.append(device.soc_pct)
    assert slave.clock.now() == day_end
    after = device.truth()

    for c in COUNTERS:
        got = after[f"{c}_energy_total_kwh"] - before[f"{c}_energy_total_kwh"]
        want = integral_wh[c] / 1000.0
        assert got == pytest.approx(want, rel=0.01, abs=0.01), (c, got, want)
        # the register (0.1 kWh, floored) carries the same energy
        assert device.get_value(f"{c}_energy_total_kwh") == pytest.approx(
            after[f"{c}_energy_total_kwh"], abs=0.1
        )
    # SOC stayed within the floor (reg 217, 10 %) and the ceiling, and both were reached
    assert all(10.0 - 1e-6 <= s <= 100.0 + 1e-6 for s in soc_seen)
    assert max(soc_seen) == pytest.approx(100.0) and min(soc_seen) == pytest.approx(10.0)
    assert after["battery_soc_pct"] == pytest.approx(ref.soc_pct, abs=1.0)
    # conservation: the house's balance and the battery's (one-way efficiencies 0.95) close exactly
    d = {c: after[f"{c}_energy_total_kwh"] - before[f"{c}_energy_total_kwh"] for c in COUNTERS}
    assert d["load"] == pytest.approx(
        d["pv"] + d["grid_import"] - d["grid_export"] + d["battery_discharge"] - d["battery_charge"], abs=1e-6
    )
    stored = d["battery_charge"] * 0.95 - d["battery_discharge"] / 0.95
    assert stored == pytest.approx(
        (after["battery_soc_pct"] - before["battery_soc_pct"]) / 100 * 5.0, abs=1e-6
    )
    # curtailment happened: PV counted is below what the array could give
    available = (
        sum(device.site.pv_w(start + timedelta(seconds=60 * (i + 1))) for i in range(1440)) / 60 / 1000
    )
    assert d["pv"] < available - 0.5
    if scenario == "export":
        assert d["grid_export"] > 1.0


# ------------------------------------------------------------------ over the serial line


def test_clock_over_the_wire_runs_factor_times_wall_time(start_sim: Any) -> None:
    start = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
    sim, m = start_sim(["--time-factor", str(FACTOR), "--start-time", start.isoformat()])
    assert isinstance(sim, SimProcess) and isinstance(m, RtuMaster)

    def sample() -> tuple[float, datetime, float]:
        sent = time.monotonic()
        regs = dict(zip((22, 23, 24), m.read(1, 22, 3), strict=True))
        return sent, clock_of(regs), time.monotonic()

    s1, c1, r1 = sample()

    # wait for 20 simulated minutes to pass (about 1.7 s of wall time at 720x)
    def later() -> tuple[float, datetime, float] | None:
        x = sample()
        return x if x[1] >= c1 + timedelta(minutes=20) else None

    s2, c2, r2 = wait_for(later, 30, "simulated time to pass")
    sim_s = (c2 - c1).total_seconds()
    # the device read its clock somewhere inside each request/reply window; registers hold whole seconds
    assert FACTOR * (s2 - r1) - 1 <= sim_s <= FACTOR * (r2 - s1) + 1
    assert sim.status()["sim_time"] >= c2.isoformat()
