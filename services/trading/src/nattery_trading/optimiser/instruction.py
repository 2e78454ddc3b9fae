"""The one mapping from a planned slot to the instruction the edge receives.

Used by the schedule publisher (``planning/service.py``) and by the back-test alike, so the back-test
executes exactly what the product sends. The instruction is a ``ScheduleSlot`` of the MQTT contract:
a mode, a power and a target SOC. What the bridge makes of it (``edge/modbus-bridge``: the envelope
keeps power and target SOC only for CHARGE and DISCHARGE; ``DeyeStrategy`` writes the registers):

- ``CHARGE`` at |power| until the SOC reaches the target (the slot's planned end SOC): grid charging;
  PV surplus above that power still charges (up to the current written for that power).
- ``DISCHARGE`` at |power| down to the target SOC, whatever the house uses: the rest is exported.
- ``SELF_CONSUMPTION``: the battery covers the whole deficit and absorbs the whole surplus (uncapped:
  the contract carries no cap for it).
- ``HOLD``: both currents zero; the battery neither discharges nor absorbs PV.

So a planned slot that trades with the grid (charging from it, discharging into it) is a forced power;
a slot that only moves energy between PV, load and battery is self-consumption. An idle slot runs
self-consumption too (the inverter reacts to the actual load and PV; a HOLD would export surprise PV
and import surprise load: on 2022 prices the back-test's capture ratio was 0.829 with idle slots held,
0.900 holding only where surplus was not forecast, 0.913 with self-consumption), except where the plan
says the battery must hold (``Plan.idle_self_consumption``: a manual hold/idle window, a zero-power
dispatch, an emergency stop's or the solver fallback's hold plan): there it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from nattery_contracts.mqtt import BatteryMode
from nattery_trading.optimiser.model import Plan

# Below this planned battery power (kW) a slot is idle; below this grid flow (kW) it does not trade.
IDLE_KW = 0.02


@dataclass(frozen=True, slots=True)
class SlotInstruction:
    """What the edge receives for one slot (the fields of ``ScheduleSlot`` besides its times)."""

    mode: BatteryMode
    battery_power_w: float  # Nattery signs: > 0 discharge; the bridge uses |power| for CHARGE/DISCHARGE
    target_soc_pct: float | None  # the planned SOC at the end of the slot

    @property
    def forced(self) -> bool:
        return self.mode in (BatteryMode.CHARGE, BatteryMode.DISCHARGE)


def slot_mode(plan: Plan, i: int, eps: float = IDLE_KW) -> BatteryMode:
    """The inverter mode of planned slot ``i`` (see the module docstring)."""
    b = float(plan.battery_power_kw[i])
    free = plan.idle_self_consumption
    # self-consumption may discharge: never where the plan must hold (a manual hold/idle window)
    sc = BatteryMode.SELF_CONSUMPTION if free is None or bool(free[i]) else BatteryMode.HOLD
    if abs(b) <= eps:
        return sc if free is not None else BatteryMode.HOLD
    # import_kw / export_kw are the LP's columns: solve() makes them exclusive (or marks the plan)
    if b > 0:
        return BatteryMode.DISCHARGE if plan.export_kw[i] > eps else sc
    return BatteryMode.CHARGE if plan.import_kw[i] > eps else sc


def slot_instruction(plan: Plan, i: int, eps: float = IDLE_KW) -> SlotInstruction:
    """The instruction published for planned slot ``i``: what ``ScheduleSlot`` carries."""
    return SlotInstruction(
        mode=slot_mode(plan, i, eps),
        battery_power_w=round(float(plan.battery_power_kw[i]), 4) * 1000.0,
        target_soc_pct=max(0.0, min(100.0, round(float(plan.soc_pct[i]), 3))),
    )
