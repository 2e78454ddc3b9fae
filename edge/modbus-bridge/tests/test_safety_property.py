"""Property: no command stream drives the simulator's inverter outside the site's envelope, and every
control ends in the safe program within its expiry plus one control period.

Hypothesis draws streams of commands and events — set_mode, set_power (any watts), schedules, set_limits
(narrowing, and attempts to widen), emergency stops, expiries from one period to a month, MQTT link
drops, a hot/cold battery, the sensor block going silent, long clock jumps — and runs them through the
bridge's real controller, bus, poller and Deye strategy against the simulator's device in-process on a
fake clock (tests/loopback.py: real Modbus frames into the simulator's frame handler). After every
control period it checks the simulator's registers and physics against the envelope in force (what the
bridge last acknowledged with ``set_limits``, else the installation's hard limits):

* battery power within max_charge_w / max_discharge_w; grid export within export_limit_w;
* the inverter's own SOC floor (register 217) >= soc_min; every TOU program's SOC target inside
  soc_min..soc_max and its power inside the limit; the export cap register <= export_limit_w;
  no charging above soc_max, no discharging below soc_min;
* a battery outside its temperature window does not move; a bridge blind for longer than the readings'
  maximum age holds the battery;
* an emergency stop keeps the inverter off until a later control;
* every control's acknowledged validity is at most 24 h (schedules 48 h) from receipt, and one period
  after it (or after link_grace for a mode/power control when the link is down) no TOU program (forced
  charge/discharge) is left on the inverter.

``make test`` runs it bounded (NATTERY_SAFETY_EXAMPLES, default 40 examples, ~10 s);
``NATTERY_SAFETY_EXAMPLES=5000 uv run pytest edge/modbus-bridge/tests/test_safety_property.py`` is the
long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import Site, command, site

from nattery_bridge.settings import BridgeSettings
from nattery_contracts.mqtt import SafetyLimits

EXAMPLES = int(os.environ.get("NATTERY_SAFETY_EXAMPLES", "40"))
PERIOD_S = 5.0
HARD = BridgeSettings().limits.safety()
MAX_AGE_S = 3 * PERIOD_S
GRACE_S = 60.0
MODES = ["self_consumption", "charge", "discharge", "hold"]

expiry_s = st.one_of(
    st.integers(1, 120).map(lambda n: n * PERIOD_S),  # within the run
    st.floats(86400.0, 40 * 86400.0),  # beyond the lifetime caps: clamped
)
power_w = st.one_of(st.floats(-9000, 9000, allow_nan=False), st.sampled_from([0.0, -1e6, 1e6, 5000.0]))
slot = st.tuples(
    st.integers(0, 20),  # gap before the slot, periods
    st.integers(1, 40),  # length, periods
    st.sampled_from(MODES),
    power_w,
    st.one_of(st.none(), st.floats(0, 100)),
)


@st.composite
def limits(draw: Any) -> dict[str, float]:
    soc_min = draw(st.floats(0, 70))
    t_min = draw(st.floats(-10, 25))
    return {
        "soc_min_pct": soc_min,
        "soc_max_pct": draw(st.floats(soc_min + 1, 100)),
        "max_charge_w": draw(st.floats(0, 6000)),
        "max_discharge_w": draw(st.floats(0, 6000)),
        "battery_temp_min_c": t_min,
        "battery_temp_max_c": draw(st.floats(t_min + 1, 55)),
        "export_limit_w": draw(st.floats(0, 4000)),
    }


op = st.one_of(
    st.tuples(st.just("mode"), st.sampled_from(MODES), expiry_s),
    st.tuples(st.just("power"), power_w, expiry_s),
    st.tuples(st.just("schedule"), st.integers(-10, 5), st.lists(slot, min_size=1, max_size=4), expiry_s),
    st.tuples(st.just("limits"), limits()),
    st.tuples(st.just("estop")),
    st.tuples(st.just("wait"), st.integers(1, 12)),
    st.tuples(st.just("jump"), st.floats(600, 4 * 86400)),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("temperature"), st.one_of(st.none(), st.floats(-15, 70))),
    st.tuples(st.just("blind"), st.booleans()),
)


@dataclass
class Model:
    """What the test knows from its own actions and the bridge's acks (never the controller's state)."""

    limits: SafetyLimits = HARD
    deadline: datetime | None = None  # validity of the last control acknowledged done
    kind: str | None = None
    estop: bool = False
    link_down_since: float | None = None
    blind_since: float | None = None


async def send(s: Site, m: Model, raw: bytes) -> dict[str, Any]:
    received = s.clock.now()
    await s.controller.handle_command(raw)
    s.physics(0.0)  # the inverter reacts to what the command wrote
    body = json.loads(raw)
    ack = [a for a in s.ack_rows() if a["id"] == body["id"]][-1]
    ctype = body["type"]
    if ack["status"] == "done":
        if ctype == "set_limits":
            m.limits = SafetyLimits.model_validate(body["params"]["limits"])
        elif ctype == "emergency_stop":
            m.estop, m.deadline, m.kind = True, None, None
        else:
            m.estop = False
            m.kind = {"set_schedule": "schedule", "set_mode": "mode", "set_power": "power"}[ctype]
            m.deadline = datetime.fromisoformat(ack["applied"]["expires_at"])
            cap = 48 * 3600 if ctype == "set_schedule" else 24 * 3600
            assert m.deadline <= received + timedelta(seconds=cap), ack
            wanted = body["params"].get("valid_until") or body["expires_at"]
            if datetime.fromisoformat(wanted) > received + timedelta(seconds=cap):
                assert "clamped" in (ack["reason"] or ""), ack
    return ack


def check(s: Site, m: Model) -> None:
    c = s.control()
    d = s.device
    lim = m.limits
    now, t = s.clock.now(), s.clock.mono()
    where = f"at {now.isoformat()} registers {c} power {d.battery_power_w:.0f} W soc {d.soc_pct:.2f}"
    p = d.battery_power_w
    # power and export within the envelope (physics of the simulator after the bridge's writes)
    assert -p <= lim.max_charge_w + 1, f"charging {-p:.0f} W > {lim.max_charge_w:.0f} W {where}"
    assert p <= lim.max_discharge_w + 1, f"discharging {p:.0f} W > {lim.max_discharge_w:.0f} W {where}"
    assert -d.grid_w <= lim.export_limit_w + 1, f"export {-d.grid_w:.0f} W {where}"
    if p < -1:
        assert d.soc_pct <= lim.soc_max_pct + 1, f"charging above soc_max {where}"
    if p > 1:
        assert d.soc_pct >= lim.soc_min_pct - 1, f"discharging below soc_min {where}"
    # the inverter's own guards (they hold even if the bridge dies)
    assert c["battery_shutdown_soc_pct"] >= lim.soc_min_pct - 0.5 or m.estop, where
    if c["work_mode"] == 0 and c["solar_sell_enabled"]:
        assert c["max_sell_power_w"] <= lim.export_limit_w + 0.5, where
    if c["tou_enabled"]:
        for n in range(1, 7):
            soc, power = c[f"tou{n}_target_soc_pct"], c[f"tou{n}_power_w"]
            if c[f"tou{n}_grid_charge"] and c["grid_charge_enabled"]:
                assert lim.soc_min_pct - 0.5 <= soc <= lim.soc_max_pct + 0.5, where
                assert power <= lim.max_charge_w + 0.5, where
            else:
                assert soc >= lim.soc_min_pct - 0.5, where
                assert power <= lim.max_discharge_w + 0.5, where
    # temperature: outside the window nothing moves
    if (
        m.blind_since is None
        and not lim.battery_temp_min_c - 0.1 <= d.temperature_c <= lim.battery_temp_max_c + 0.1
    ):
        assert abs(p) < 1, f"battery at {d.temperature_c:.1f} C moves {where}"
    # blind: the battery holds once the readings are older than their maximum age
    if m.blind_since is not None and t - m.blind_since > MAX_AGE_S + PERIOD_S:
        assert abs(p) < 1 and c["battery_max_charge_current_a"] == 0, f"blind but moving {where}"
    # emergency stop
    if m.estop:
        assert c["inverter_enabled"] == 0 and abs(p) < 1, f"emergency stop not holding {where}"
        return
    # every control ends: no forced program one period after its validity (or the link grace)
    ended = m.deadline is not None and now >= m.deadline + timedelta(seconds=PERIOD_S)
    lost = (
        m.kind in ("mode", "power")
        and m.link_down_since is not None
        and t - m.link_down_since > GRACE_S + PERIOD_S
    )
    if ended or lost:
        assert c["tou_enabled"] == 0 and c["grid_charge_enabled"] == 0, f"control not ended {where}"
        assert c["inverter_enabled"] == 1
        assert d.grid_w >= -1, f"battery exporting after its control ended {where}"


async def run(ops: list[tuple[Any, ...]], tmp: Path) -> None:
    async with site(
        tmp,
        period_s=PERIOD_S,
        link_grace_s=GRACE_S,
        readings_max_age_s=MAX_AGE_S,
        temperature_release_after_s=4 * PERIOD_S,
    ) as s:
        m = Model()
        await s.period()
        check(s, m)
        for o in ops:
            kind = o[0]
            link_up = m.link_down_since is None
            periods = 1
            if kind == "mode" and link_up:
                await send(s, m, command(s.clock, "set_mode", {"mode": o[1]}, expires_in_s=o[2]))
            elif kind == "power" and link_up:
                await send(s, m, command(s.clock, "set_power", {"battery_power_w": o[1]}, expires_in_s=o[2]))
            elif kind == "schedule" and link_up:
                now = s.clock.now()
                cursor = now + timedelta(seconds=o[1] * PERIOD_S)
                slots = []
                for gap, length, mode, watts, soc in o[2]:
                    start = cursor + timedelta(seconds=gap * PERIOD_S)
                    cursor = start + timedelta(seconds=length * PERIOD_S)
                    slots.append(
                        {
                            "start": start.isoformat(),
                            "end": cursor.isoformat(),
                            "mode": mode,
                            "battery_power_w": watts,
                            "target_soc_pct": soc,
                        }
                    )
                valid = (now + timedelta(seconds=o[3])).isoformat()
                await send(s, m, command(s.clock, "set_schedule", {"slots": slots, "valid_until": valid}))
            elif kind == "limits" and link_up:
                await send(s, m, command(s.clock, "set_limits", {"limits": o[1]}))
            elif kind == "estop" and link_up:
                await send(s, m, command(s.clock, "emergency_stop"))
            elif kind == "wait":
                periods = o[1]
            elif kind == "jump":
                await s.period(o[1])
                check(s, m)
            elif kind == "link":
                if o[1]:
                    m.link_down_since = s.link_down_since = None
                elif m.link_down_since is None:
                    m.link_down_since = s.link_down_since = s.clock.mono()
            elif kind == "temperature":
                s.device.pin({"temperature_c": o[1]})
            elif kind == "blind":
                if o[1] and m.blind_since is None:
                    s.faults.update({"silent_registers": [182]})
                    m.blind_since = s.clock.mono()
                elif not o[1]:
                    s.faults.update({"silent_registers": []})
                    m.blind_since = None
            if kind not in ("temperature", "blind"):  # the bridge sees what changed at its next poll
                check(s, m)
            for _ in range(periods):
                await s.period()
                check(s, m)
        # finally let everything expire (at most 48 h): the safe program must be on the inverter
        m.link_down_since = s.link_down_since = None
        for _ in range(3):
            await s.period(20 * 3600)
            check(s, m)
        assert m.estop or m.deadline is None or s.clock.now() >= m.deadline + timedelta(seconds=PERIOD_S)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(op, min_size=1, max_size=25))
def test_no_command_stream_leaves_the_envelope_and_every_control_ends(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="bridge-prop-") as d:
        asyncio.run(run(ops, Path(d)))
