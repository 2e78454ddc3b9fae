"""The edge's safety claims on the simulator's device, in-process on a fake clock (tests/loopback.py):
temperature hold with latch and hysteresis, stale readings, control lifetime, read-back mismatch and
drift. Plus the pure pieces (pacing, guard, lifetime, freshness)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loopback import RMAP, FakeClock, Site, command, site

from nattery_bridge import lifetime
from nattery_bridge.freshness import Readings
from nattery_bridge.pacing import AdaptivePacing
from nattery_bridge.settings import BridgeSettings
from nattery_bridge.temperature_guard import TemperatureGuard
from nattery_contracts.mqtt import SafetyLimits

LIMITS = BridgeSettings().limits.safety()  # 0..50 C


def currents(s: Site) -> tuple[float, float]:
    c = s.control()
    return c["battery_max_charge_current_a"], c["battery_max_discharge_current_a"]


async def last_ack(s: Site, raw: bytes) -> dict[str, object]:
    await s.controller.handle_command(raw)
    import json

    cid = json.loads(raw)["id"]
    return [a for a in s.ack_rows() if a["id"] == cid][-1]


# ---------------------------------------------------------------- temperature hold


async def test_hot_battery_holds_latched_until_back_inside_with_hysteresis(tmp_path: Path) -> None:
    async with site(tmp_path, temperature_hysteresis_c=3.0, temperature_release_after_s=30.0) as s:
        await s.period()
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": 2000}))
        assert ack["status"] == "done"
        await s.period()
        assert s.device.battery_power_w > 1500  # discharging

        s.device.pin({"temperature_c": 52.0})  # outside 0..50 C
        await s.period()
        assert currents(s) == (0, 0)  # HOLD: both currents zero, not self-consumption at full current
        assert s.device.battery_power_w == 0
        assert s.events("temperature.hold") and s.controller.guard.latched
        assert s.events("failsafe.activated")[-1]["details"]["reason"] == "envelope"
        assert s.metrics.temperature_hold._value.get() == 1
        # a moving command is refused while latched; the safe program is accepted but holds
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": -1000}))
        assert ack["status"] == "rejected" and "temperature hold" in str(ack["reason"])

        # back inside the window but not by the hysteresis (48.5 > 50 - 3): still latched
        s.device.pin({"temperature_c": 48.5})
        for _ in range(10):
            await s.period()
            assert currents(s) == (0, 0)
        # inside the hysteresis band, but only for less than release_after_s: still latched
        s.device.pin({"temperature_c": 46.0})
        for _ in range(5):  # 25 s < 30 s
            await s.period()
            assert currents(s) == (0, 0)
        # a reading outside the band restarts the dwell
        s.device.pin({"temperature_c": 47.5})
        await s.period()
        s.device.pin({"temperature_c": 46.0})
        await s.period()  # the first reading back in the band
        for _ in range(5):  # 25 s later: still latched
            await s.period()
            assert currents(s) == (0, 0) and s.controller.guard.latched
        await s.period()  # 30 s: released
        assert not s.controller.guard.latched
        assert s.events("temperature.released")
        assert currents(s)[0] > 0 and currents(s)[1] > 0  # the safe program again
        assert s.device.battery_power_w > 0  # serves the house


async def test_cold_battery_and_a_schedule_hold_then_resume(tmp_path: Path) -> None:
    async with site(tmp_path, temperature_release_after_s=10.0) as s:
        await s.period()
        now = s.clock.now()
        sched = {
            "slots": [
                {
                    "start": (now - timedelta(minutes=1)).isoformat(),
                    "end": (now + timedelta(hours=2)).isoformat(),
                    "mode": "charge",
                    "battery_power_w": -2000,
                }
            ],
            "valid_until": (now + timedelta(hours=3)).isoformat(),
        }
        assert (await last_ack(s, command(s.clock, "set_schedule", sched)))["status"] == "done"
        await s.period()
        assert s.device.battery_power_w < -1500
        s.device.pin({"temperature_c": -2.0})
        await s.period()
        assert currents(s) == (0, 0) and s.device.battery_power_w == 0
        assert s.controller.active is not None and s.controller.active.kind == "schedule"  # overridden
        s.device.pin({"temperature_c": None})  # thermal model: back to ambient 20 C
        s.device.temperature_c = 20.0
        for _ in range(3):
            await s.period()
        assert s.device.battery_power_w < -1500  # the schedule resumes after the dwell


# ---------------------------------------------------------------- stale readings


async def test_stale_or_missing_readings_refuse_moving_modes(tmp_path: Path) -> None:
    async with site(tmp_path, readings_max_age_s=15.0) as s:
        # nothing read yet: refused, and the inverter holds
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": -2000}))
        assert ack["status"] == "rejected" and "never read" in str(ack["reason"])
        await s.period()  # first poll
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": -2000}))
        assert ack["status"] == "done"
        await s.period()
        assert s.device.battery_power_w < -1500

        # the block with SOC, temperature and grid power stops answering (the other block still does)
        s.faults.update({"silent_registers": [184]})
        for _ in range(3):  # 15 s: still fresh enough
            await s.period()
            assert s.device.battery_power_w < -1500
        await s.period()
        assert s.controller.readings.problems()
        assert currents(s) == (0, 0) and s.device.battery_power_w == 0  # holds while blind
        ev = s.events("readings.stale")
        assert ev and "battery_soc_pct" in " ".join(ev[-1]["details"]["problems"])
        ack = await last_ack(s, command(s.clock, "set_mode", {"mode": "discharge"}))
        assert ack["status"] == "rejected" and "stale" in str(ack["reason"])

        # readings come back: the control (still valid) resumes
        s.faults.update({"silent_registers": []})
        await s.period()
        assert s.events("readings.fresh")
        assert s.device.battery_power_w < -1500


# ---------------------------------------------------------------- link grace


async def test_a_lost_link_keeps_the_control_for_the_grace_then_the_safe_program(tmp_path: Path) -> None:
    """The grace's length on the fake clock (the end-to-end test checks the order of events only)."""
    async with site(tmp_path, period_s=1.0, link_grace_s=10.0, readings_max_age_s=60.0) as s:
        await s.period()
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": -2000}))
        assert ack["status"] == "done"
        s.link_down_since = s.clock.mono()
        for _ in range(10):  # 10 s down: not more than the grace
            await s.period()
            assert s.device.battery_power_w < -1500
        assert not s.events("failsafe.activated")
        await s.period()  # 11 s: past the grace
        assert s.events("failsafe.activated")[-1]["details"]["reason"] == "link_lost"
        assert s.controller.active is None
        assert s.device.battery_power_w > 0  # the safe program serves the house


# ---------------------------------------------------------------- lifetime


async def test_control_lifetime_is_clamped_and_the_ack_says_so(tmp_path: Path) -> None:
    async with site(tmp_path, max_control_lifetime_s=3600.0) as s:
        await s.period()
        ack = await last_ack(
            s, command(s.clock, "set_power", {"battery_power_w": -1000}, expires_in_s=30 * 86400)
        )
        assert ack["status"] == "done"
        assert "clamped" in str(ack["reason"]) and "max lifetime 1 h" in str(ack["reason"])
        applied = ack["applied"]
        assert isinstance(applied, dict)
        expires = datetime.fromisoformat(applied["expires_at"])
        assert expires == s.clock.now() + timedelta(hours=1)
        # a schedule: 48 h at most
        now = s.clock.now()
        sched = {
            "slots": [
                {"start": now.isoformat(), "end": (now + timedelta(days=5)).isoformat(), "mode": "hold"}
            ],
            "valid_until": (now + timedelta(days=6)).isoformat(),
        }
        ack = await last_ack(s, command(s.clock, "set_schedule", sched))
        assert "valid_until" in str(ack["reason"]) and "48 h" in str(ack["reason"])
        assert s.controller.active is not None
        assert s.controller.active.expires_at == now + timedelta(hours=48)
        assert s.metrics.lifetime_clamped._value.get() == 2


def test_lifetime_settings_go_down_never_up() -> None:
    assert BridgeSettings(max_control_lifetime_s=600).max_control_lifetime_s == 600
    with pytest.raises(ValueError):
        BridgeSettings(max_control_lifetime_s=25 * 3600)
    with pytest.raises(ValueError):
        BridgeSettings(max_schedule_lifetime_s=49 * 3600)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert not lifetime.clamp(t + timedelta(hours=2), t, 7200, "expires_at").clamped
    assert lifetime.clamp(t + timedelta(hours=2, seconds=1), t, 7200, "expires_at").clamped


# ---------------------------------------------------------------- read-back mismatch and drift


async def test_readback_mismatch_and_drift_are_reported_reapplied_and_counted(tmp_path: Path) -> None:
    async with site(tmp_path, drift_check_interval_s=10.0) as s:
        await s.period()
        # the inverter acknowledges the write but does not take it: read-back differs
        s.faults.update({"ignore_writes_next": 1})
        ack = await last_ack(s, command(s.clock, "set_power", {"battery_power_w": -2000}))
        assert ack["status"] == "done"  # re-applied at once, verified the second time
        ev = s.events("control.readback_mismatch")
        assert ev and ev[-1]["details"]["registers"]
        assert s.metrics.register_mismatches.labels("readback")._value.get() == 1
        assert s.control()["tou_enabled"] == 1 and s.control()["grid_charge_enabled"] == 1

        # someone changes a register behind the bridge's back
        s.device.poke("battery_max_charge_current_a", 3)
        s.device.poke("max_sell_power_w", 9000)
        for _ in range(3):  # the drift check runs every 10 s
            await s.period()
        ev = s.events("control.drift")
        poked = {RMAP["battery_max_charge_current_a"].addresses[0], RMAP["max_sell_power_w"].addresses[0]}
        assert ev and set(ev[-1]["details"]["registers"]) >= poked
        assert s.metrics.register_mismatches.labels("drift")._value.get() == 1
        await s.period()  # re-applied on the next tick
        assert s.control()["battery_max_charge_current_a"] > 3
        assert s.control()["max_sell_power_w"] <= 3680


# ---------------------------------------------------------------- pure pieces


def test_pacing_starts_at_t35_backs_off_only_on_failures_after_a_reply_and_learns() -> None:
    now = [0.0]
    p = AdaptivePacing(0.00365, 0.1, lambda: now[0], decay_after=10)
    assert p.pacing_s == 0.00365
    assert not p.failure(None)  # no good reply yet: says nothing about the pause
    assert not p.failure(0.5)  # long idle gap: the device is off, not deaf
    assert p.pacing_s == 0.00365
    # a device deaf for 20 ms after its reply
    while p.pacing_s <= 0.020:
        assert p.failure(p.pacing_s)
    assert p.pacing_s == pytest.approx(0.0292)
    for _ in range(200):
        p.success()
    # crept down, but not below 1.25 x the worst failing gap (14.6 ms -> 18.25 ms)
    assert p.pacing_s == pytest.approx(0.01825)
    assert p.failure(p.pacing_s)  # 18.25 ms still too short: backs off once more, learns it
    for _ in range(500):
        p.success()
    assert p.pacing_s == pytest.approx(0.01825 * 1.25)
    for _ in range(50):
        p.failure(p.pacing_s)
    assert p.pacing_s == 0.1  # the ceiling
    now[0] += 4000  # memory fades
    for _ in range(10 * 60):
        p.success()
    assert p.pacing_s == 0.00365


def test_guard_and_readings_units() -> None:
    now = [0.0]
    g = TemperatureGuard(2.0, 10.0, lambda: now[0])
    lim = SafetyLimits(**{**LIMITS.model_dump(), "battery_temp_min_c": 10, "battery_temp_max_c": 13})
    assert g.release_band(lim) == (11.5, 11.5)  # narrower than twice the hysteresis: the middle
    assert g.observe(14.0, lim) is not None and g.latched
    assert g.observe(None, lim) is None and g.latched  # a missing reading never releases
    now[0] = 100
    assert g.observe(11.5, lim) is None
    now[0] = 110
    change = g.observe(11.5, lim)
    assert change is not None and not change.latched
    r = Readings(10.0, lambda: now[0])
    assert r.problems() == [
        "battery_soc_pct never read",
        "battery_temperature_c never read",
        "grid_power_w never read",
    ]
    r.update({"battery_soc_pct": 50, "battery_temperature_c": 20, "grid_power_w": 100})
    assert r.fresh and r.live().soc_pct == 50
    now[0] = 121
    assert not r.fresh and r.live().soc_pct is None


def test_fake_clock_is_consistent() -> None:
    c = FakeClock()
    t0 = c.now()
    c.t += 5
    assert c.now() - t0 == timedelta(seconds=5)
    assert tempfile.gettempdir()
