"""The one mapping from a planned slot to the instruction the edge receives.

Used by the schedule publisher (``schedules/service.py``) and by the back-test alike, so the back-test
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

import numpy as np

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


@dataclass(frozen=True, slots=True)
class _Columns:
    """A plan's columns as Python lists (numpy scalars cost about a microsecond an operation, and the
    publisher maps every slot of every plan of a fleet re-plan), kept on the plan once made."""

    arrays: tuple[int, ...]  # ids of the arrays they were made from (a replaced array remakes them)
    power_kw: list[float]
    soc_pct: list[float]
    import_kw: list[float]
    export_kw: list[float]
    free: list[bool] | None


def _columns(plan: Plan) -> _Columns:
    free = plan.idle_self_consumption
    arrays = (id(plan.battery_power_kw), id(plan.soc_pct), id(plan.import_kw), id(plan.export_kw), id(free))
    cols: _Columns | None = plan.__dict__.get("_instruction_columns")
    if cols is None or cols.arrays != arrays:
        cols = _Columns(
            arrays,
            plan.battery_power_kw.tolist(),
            plan.soc_pct.tolist(),
            plan.import_kw.tolist(),
            plan.export_kw.tolist(),
            None if free is None else [bool(f) for f in free],
        )
        plan.__dict__["_instruction_columns"] = cols
    return cols


def slot_mode(plan: Plan, i: int, eps: float = IDLE_KW) -> BatteryMode:
    """The inverter mode of planned slot ``i`` (see the module docstring)."""
    return _mode(_columns(plan), i, eps)


def slot_modes(plan: Plan, eps: float = IDLE_KW) -> list[str]:
    """The inverter mode (its value) of every planned slot: what a stored schedule version keeps per
    slot, made for the whole plan at once with array operations (a fleet re-plan stores 72 slots a
    site); the same mapping as ``_mode`` (``tests/test_instruction.py`` compares them)."""
    power = np.asarray(plan.battery_power_kw, dtype=np.float64)
    free = plan.idle_self_consumption
    allowed = np.ones(len(power), bool) if free is None else np.asarray(free, dtype=bool)
    sc = np.where(allowed, _SELF_CONSUMPTION, _HOLD)  # self-consumption unless the plan must hold
    idle = np.full(len(power), _HOLD) if free is None else sc
    trading = np.where(
        power > 0,
        np.where(np.asarray(plan.export_kw) > eps, _DISCHARGE, sc),
        np.where(np.asarray(plan.import_kw) > eps, _CHARGE, sc),
    )
    codes = np.where(np.abs(power) <= eps, idle, trading)
    return [_MODE_VALUES[c] for c in codes.tolist()]


_SELF_CONSUMPTION, _HOLD, _CHARGE, _DISCHARGE = range(4)
_MODE_VALUES = [
    BatteryMode.SELF_CONSUMPTION.value,
    BatteryMode.HOLD.value,
    BatteryMode.CHARGE.value,
    BatteryMode.DISCHARGE.value,
]


def _mode(c: _Columns, i: int, eps: float) -> BatteryMode:
    b = c.power_kw[i]
    # self-consumption may discharge: never where the plan must hold (a manual hold/idle window)
    sc = BatteryMode.SELF_CONSUMPTION if c.free is None or c.free[i] else BatteryMode.HOLD
    if abs(b) <= eps:
        return sc if c.free is not None else BatteryMode.HOLD
    # import_kw / export_kw are the LP's columns: solve() makes them exclusive (or marks the plan)
    if b > 0:
        return BatteryMode.DISCHARGE if c.export_kw[i] > eps else sc
    return BatteryMode.CHARGE if c.import_kw[i] > eps else sc


def slot_instruction(plan: Plan, i: int, eps: float = IDLE_KW) -> SlotInstruction:
    """The instruction published for planned slot ``i``: what ``ScheduleSlot`` carries."""
    c = _columns(plan)
    return SlotInstruction(
        mode=_mode(c, i, eps),
        battery_power_w=round(c.power_kw[i], 4) * 1000.0,
        target_soc_pct=max(0.0, min(100.0, round(c.soc_pct[i], 3))),
    )
