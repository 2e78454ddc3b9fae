"""The back-test's inverter model against the bridge + simulator, mode by mode.

One day's schedule runs twice:

- through the REAL bridge code and the REAL simulator physics, in-process on a compressed clock: the
  schedule's slots are clamped by ``slots.clamp_slot``, turned into targets by
  ``slots.slot_target``, checked by ``envelope.check`` (as ``controller.tick`` does), and
  ``DeyeStrategy.plan`` computes the registers from the SOC/voltage/temperature the simulator publishes;
  they are written with the register map's encoding through ``DeyeInverter.write`` (validation as an
  FC16 write), and ``DeyeInverter.tick`` integrates the physics every 10 simulated seconds with the
  simulator's own load and PV profiles. Not real: the serial line (pty, Modbus framing, timing), MQTT,
  the controller's task loop (its re-apply rule is reproduced: on receipt, then when the target
  changes).
- through the back-test's ``DeyeModel`` (written from the same code), fed the simulator's load and PV,
  once at 10-second resolution and once as the back-test feeds it: one mean per slot, 5-minute steps.

Daily energy flows (battery charge and discharge, grid import and export) must agree within 2 %.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nattery_bridge.control import DeyeStrategy
from nattery_bridge.envelope import Live, Target, check
from nattery_bridge.slots import clamp_slot, slot_target
from nattery_contracts.modbus import encode, load_profile
from nattery_contracts.mqtt import BatteryMode, SafetyLimits, ScheduleSlot
from nattery_sim.devices import BatteryConfig, DeyeInverter
from nattery_sim.profiles import SiteProfile
from nattery_trading.backtest.inverter import DeyeModel, SlotFlows
from nattery_trading.optimiser import Battery, PlanInput, Site, solve
from nattery_trading.optimiser.instruction import SlotInstruction, slot_instruction

DEYE = load_profile("deye-sunsynk-1ph")
TICK_S = 10
SLOT_S = 1800
PV_KWP = 4.0
BATTERY = Battery()  # 10 kWh, 5 kW each way, 0.95 each way, SOC 10-100 %


def _hand_schedule(day: datetime) -> list[SlotInstruction]:
    """Every mode, with SOC targets reached inside slots and a power above the current limit."""
    m = BatteryMode
    spec: list[tuple[int, BatteryMode, float, float | None]] = [  # (until hour, mode, W, target SOC)
        (2, m.SELF_CONSUMPTION, 0, None),
        (5, m.CHARGE, -3000, 45.0),
        (7, m.HOLD, 0, None),
        (9, m.SELF_CONSUMPTION, 0, None),
        (12, m.HOLD, 0, None),
        (14, m.CHARGE, -2000, 97.0),
        (16, m.SELF_CONSUMPTION, 0, None),
        (17, m.DISCHARGE, 5000, 40.0),
        (19, m.DISCHARGE, 2000, 20.0),
        (24, m.SELF_CONSUMPTION, 0, None),
    ]
    out: list[SlotInstruction] = []
    for i in range(48):
        hour = i / 2
        _until, mode, w, soc = next(s for s in spec if hour < s[0])
        out.append(SlotInstruction(mode, w, soc))
    return out


def _planned_schedule(day: datetime, site: SiteProfile) -> list[SlotInstruction]:
    """The product's path: the optimiser's plan for the day, mapped by ``slot_instruction``."""
    times = [day + timedelta(minutes=30 * i + 15) for i in range(48)]
    hod = np.array([t.hour + t.minute / 60 for t in times])
    price = 18 + 14 * np.sin((hod - 12) / 24 * 2 * np.pi) - 10 * ((hod > 1) & (hod < 5))
    inp = PlanInput(
        start=day,
        slot_minutes=30,
        import_price_p_per_kwh=price,
        export_price_p_per_kwh=np.full(48, 15.0),
        load_kw=np.array([site.load_w(t) / 1000 for t in times]),
        pv_kw=np.array([site.pv_w(t) / 1000 for t in times]),
        initial_soc_pct=50.0,
        battery=BATTERY,
    )
    plan = solve(inp, explain=False)
    return [slot_instruction(plan, i) for i in range(48)]


def _write(sim: DeyeInverter, values: dict[str, float]) -> None:
    for name, value in values.items():
        p = DEYE[name]
        assert sim.write(p.addresses[0], encode(p, value, current=sim.regs[p.addresses[0]])) is None


def _through_bridge_and_sim(
    day: datetime, schedule: list[SlotInstruction], limits: SafetyLimits, site: SiteProfile
) -> tuple[dict[str, float], float]:
    sim = DeyeInverter(
        DEYE,
        BatteryConfig(
            capacity_kwh=BATTERY.capacity_kwh, max_power_w=5000, start_soc_pct=50.0, min_soc_pct=10
        ),
        site,
    )
    strategy = DeyeStrategy(DEYE)
    slots = [
        clamp_slot(
            ScheduleSlot(
                start=day + timedelta(seconds=SLOT_S * i),
                end=day + timedelta(seconds=SLOT_S * (i + 1)),
                mode=s.mode,
                battery_power_w=s.battery_power_w,
                target_soc_pct=s.target_soc_pct,
            ),
            limits,
        )
        for i, s in enumerate(schedule)
    ]
    sim.tick(day, 0)
    before = sim.truth()
    applied: Target | None = None
    for k in range(48 * SLOT_S // TICK_S):
        t = day + timedelta(seconds=TICK_S * k)
        slot = slots[k * TICK_S // SLOT_S]
        target = slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct)
        live = Live(
            soc_pct=sim.get_value("battery_soc_pct"),
            battery_temp_c=sim.get_value("battery_temperature_c"),
            battery_voltage_v=sim.get_value("battery_voltage_v"),
        )
        if target.mode in (BatteryMode.CHARGE, BatteryMode.DISCHARGE):
            d = check(target, limits, Live(None, live.battery_temp_c, live.battery_voltage_v))
            assert d.allowed, d.reason
            target = d.target
        if target != applied:
            _write(sim, strategy.plan(target, limits, live))
            applied = target
        sim.tick(t + timedelta(seconds=TICK_S), TICK_S)
    after = sim.truth()
    flows = {
        k: after[f"{k}_energy_total_kwh"] - before[f"{k}_energy_total_kwh"]
        for k in ("battery_charge", "battery_discharge", "grid_import", "grid_export")
    }
    return flows, after["battery_soc_pct"]


def _through_model(
    day: datetime,
    schedule: list[SlotInstruction],
    site: Site,
    profile: SiteProfile,
    per_slot: int,
    step_s: float,
) -> tuple[dict[str, float], float]:
    model = DeyeModel(BATTERY, site, soc_pct=50.0, step_s=step_s)
    total = SlotFlows()
    seg = SLOT_S // per_slot
    for i, inst in enumerate(schedule):
        t0 = day + timedelta(seconds=SLOT_S * i)
        if per_slot == 1:  # the back-test's resolution: the slot's mean load and PV
            pts = [t0 + timedelta(seconds=TICK_S * (j + 1)) for j in range(SLOT_S // TICK_S)]
            load = [float(np.mean([profile.load_w(t) for t in pts]))]
            pv = [float(np.mean([profile.pv_w(t) for t in pts]))]
        else:
            pts = [t0 + timedelta(seconds=seg * (j + 1)) for j in range(per_slot)]
            load = [profile.load_w(t) for t in pts]
            pv = [profile.pv_w(t) for t in pts]
        f = model.run_slot(inst, load, pv, SLOT_S, new_schedule=i == 0)
        total.charge_kwh += f.charge_kwh
        total.discharge_kwh += f.discharge_kwh
        total.import_kwh += f.import_kwh
        total.export_kwh += f.export_kwh
    flows = {
        "battery_charge": total.charge_kwh,
        "battery_discharge": total.discharge_kwh,
        "grid_import": total.import_kwh,
        "grid_export": total.export_kwh,
    }
    return flows, model.soc_pct


CASES = [
    ("hand", datetime(2022, 6, 21, tzinfo=UTC), math.inf),
    ("hand", datetime(2022, 3, 15, tzinfo=UTC), 2.5),  # export limit 2.5 kW: curtailment
    ("planned", datetime(2022, 6, 21, tzinfo=UTC), math.inf),
    ("planned", datetime(2022, 1, 12, tzinfo=UTC), math.inf),
]


@pytest.mark.parametrize(("kind", "day", "export_kw"), CASES)
def test_model_matches_bridge_and_simulator(kind: str, day: datetime, export_kw: float) -> None:
    profile = SiteProfile(pv_kwp=PV_KWP)
    schedule = _hand_schedule(day) if kind == "hand" else _planned_schedule(day, profile)
    limits = SafetyLimits(
        soc_min_pct=BATTERY.soc_min_pct,
        soc_max_pct=BATTERY.soc_max_pct,
        max_charge_w=BATTERY.max_charge_kw * 1000,
        max_discharge_w=BATTERY.max_discharge_kw * 1000,
        battery_temp_min_c=-10,
        battery_temp_max_c=55,
        export_limit_w=min(export_kw * 1000, 12000.0),
    )
    modes = {s.mode for s in schedule}
    if kind == "hand":
        assert modes == set(BatteryMode)
    real, real_soc = _through_bridge_and_sim(day, schedule, limits, profile)
    site = Site(export_limit_kw=export_kw)
    fine, fine_soc = _through_model(day, schedule, site, profile, SLOT_S // TICK_S, TICK_S)
    coarse, coarse_soc = _through_model(day, schedule, site, profile, 1, 300)
    for name, got in (("10 s", fine), ("slot means", coarse)):
        for k, v in real.items():
            assert got[k] == pytest.approx(v, rel=0.02, abs=0.05), (name, k, got, real)
    assert fine_soc == pytest.approx(real_soc, abs=1.0)
    assert coarse_soc == pytest.approx(real_soc, abs=2.0)
    # the day exercised the modes it claims to: the battery both charged and discharged
    assert real["battery_charge"] > 1.0 and real["battery_discharge"] > 1.0
