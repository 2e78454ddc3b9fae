"""An accelerated simulator through the real bridge: socat pty, ``python -m nattery_bridge`` polling it in
real time, the project's Mosquitto; the published telemetry carries the accelerated clock and energy
counters (issue 14).

The bridge's own test harness (edge/modbus-bridge/tests/bridge_harness.py: the broker's site user, the
bridge subprocess, device-service's view of the topics) is reused as it is.
"""

from __future__ import annotations

import itertools
import math
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nattery_sim.profiles import SiteProfile
from nattery_sim.testing import PtyPair, SimProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "modbus-bridge" / "tests"))

from bridge_harness import BridgeProcess, bridge_env, broker_reachable, cloud, ensure_site_user

FACTOR = 720.0
START = datetime(2026, 6, 21, 22, 0, tzinfo=UTC)  # a winter-free June night: no PV with --pv-kwp 0
LOAD_SCALE = 3.0  # ~1.5 kW: the 0.1 kWh registers move every few simulated minutes


@pytest.fixture
def site_user() -> None:
    if not broker_reachable():
        pytest.fail(
            "project Mosquitto on 127.0.0.1:1884 not reachable: run `bash infrastructure/local/setup.sh`"
        )
    ensure_site_user()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[PtyPair, SimProcess]]:
    pty = PtyPair(tmp_path / "ttySim", tmp_path / "ttyBridge", log=tmp_path / "socat.log").start()
    # frozen until the bridge publishes, then accelerated: the test does not race the bridge's start-up
    args = [
        "--time-factor",
        "0",
        "--start-time",
        START.isoformat(),
        "--pv-kwp",
        "0",
        "--load-scale",
        str(LOAD_SCALE),
    ]
    sim = SimProcess(pty.a, control_socket=tmp_path / "ctl", args=args, log=tmp_path / "sim.log").start()
    try:
        yield pty, sim
    finally:
        sim.stop()
        pty.stop()


def load_kwh(a: datetime, b: datetime, step_s: float = 10.0) -> float:
    site = SiteProfile(pv_kwp=0.0, load_scale=LOAD_SCALE)
    n = max(1, math.ceil((b - a).total_seconds() / step_s))
    h = (b - a).total_seconds() / n
    return sum(site.load_w(a + timedelta(seconds=h * (k + 1))) for k in range(n)) * h / 3.6e6


def clock(v: dict[str, float]) -> datetime:
    return datetime(
        int(v["clock_year"]), int(v["clock_month"]), int(v["clock_day"]),
        int(v["clock_hour"]), int(v["clock_minute"]), int(v["clock_second"]), tzinfo=UTC,
    )  # fmt: skip


@pytest.mark.usefixtures("site_user")
async def test_bridge_publishes_the_accelerated_clock_and_counters(
    rig: tuple[PtyPair, SimProcess], tmp_path: Path
) -> None:
    pty, sim = rig
    device = f"t-{uuid.uuid4().hex[:10]}"
    env = bridge_env(tmp_path, device, Path(pty.b), NATTERY_BRIDGE_TELEMETRY__SLOW_INTERVAL_S="1")
    bridge = BridgeProcess(tmp_path, env).start()
    try:
        async with cloud(device) as c:

            def slow() -> list[dict[str, Any]]:
                """Samples with the clock and the counters (the slow group; fast polls carry the
                counters too, not the clock)."""
                wanted = ("clock_year", "load_energy_today_kwh")
                return [t["values"] for t in c.telemetry() if all(k in t["values"] for k in wanted)]

            await c.wait_for(slow, 30, "the bridge's first slow telemetry")
            sim.control({"cmd": "time_factor", "factor": FACTOR})
            midnight = datetime(2026, 6, 22, tzinfo=UTC)
            await c.wait_for(
                lambda: any(clock(v) >= midnight + timedelta(minutes=30) for v in slow()),
                60,
                "telemetry half an hour after simulated midnight",
            )
    finally:
        rc = bridge.stop()
    assert rc in (0, -15, None), bridge.log_text()[-4000:]

    samples = [(clock(v), v) for v in slow()]
    before = [(t, v) for t, v in samples if t < midnight]
    after = [(t, v) for t, v in samples if t >= midnight]
    assert before and after
    assert max(t for t, _ in before) > START + timedelta(hours=1)  # the clock ran through the night
    for t, v in samples:
        # every sample: today's load is the load since the simulated start or midnight (the register is
        # 0.1 kWh, floored; the clock and the counters are separate reads, a few simulated minutes
        # apart: a clock read just before midnight may come with counters read just after it)
        if midnight - timedelta(minutes=15) <= t < midnight:
            continue
        since = max(START, datetime.combine(t.date(), datetime.min.time(), tzinfo=UTC))
        assert v["load_energy_today_kwh"] == pytest.approx(load_kwh(since, t), abs=0.3), t
    # the today counters reset at simulated midnight, the totals went on
    last_before = [v for t, v in before if t < midnight - timedelta(minutes=15)][-1]
    last_after = after[-1][1]
    assert last_before["load_energy_today_kwh"] > 2.0
    assert last_after["load_energy_today_kwh"] < last_before["load_energy_today_kwh"] - 1.0
    assert last_after["load_energy_total_kwh"] > last_before["load_energy_total_kwh"]
    t0, v0 = samples[0]
    t1, v1 = samples[-1]
    assert v1["load_energy_total_kwh"] - v0["load_energy_total_kwh"] == pytest.approx(
        load_kwh(t0, t1), abs=0.3
    )
    for (_, a), (_, b) in itertools.pairwise(samples):
        assert b["load_energy_total_kwh"] >= a["load_energy_total_kwh"]
