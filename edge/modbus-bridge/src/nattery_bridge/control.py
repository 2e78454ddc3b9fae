"""Inverter-family control strategies and the read-compare-write executor.

A strategy turns a checked :class:`~nattery_bridge.envelope.Target` into register values (by point name
of the register map). :func:`apply_plan` then reads those registers, writes only the ones that differ
(flash/EEPROM wear, modbus-rtu.md §6.7), in contiguous FC16 runs, reads the written registers back and
verifies them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from nattery_contracts.modbus.programs import charge_target_pct, discharge_target_pct
from nattery_contracts.modbus.registers import RegisterMap, decode_point, group_blocks, store_value
from nattery_contracts.mqtt import BatteryMode, SafetyLimits

from .envelope import Live, Target
from .rtu import ModbusError, RtuMaster


class VerifyError(ModbusError):
    kind = "verify_failed"

    def __init__(self, message: str, registers: list[int] | None = None) -> None:
        super().__init__(message)
        self.registers = registers or []


class ControlStrategy(Protocol):
    """Turns targets into register values for one inverter family."""

    name: str

    def plan(self, target: Target, limits: SafetyLimits, live: Live) -> dict[str, float]:
        """Register values (by point name) that make the inverter follow ``target`` within ``limits``."""
        ...

    def emergency_stop_plan(self, limits: SafetyLimits) -> dict[str, float]:
        """Register values that stop all battery power flow."""
        ...


@dataclass
class DeyeStrategy:
    """Deye/Sunsynk single-phase hybrids (inverter-registers.md §1.6, evcc's Deye recipes §3), written
    against the control semantics of ``edge/inverter-sim`` (its README, "Control semantics").

    Every plan sets ``battery_shutdown_soc_pct`` (217) to the envelope's ``soc_min``, so the inverter
    itself keeps the floor even if the bridge dies, and the export cap (``max_sell_power_w``) to the
    site's ``export_limit_w``. The bridge runs the cloud's schedule itself, so when a time-of-use
    program is needed all six programs carry the *current* target (the inverter clock and slot
    boundaries do not matter; starts fixed at 00:00, 04:00 ... 20:00).

    * self-consumption (the safe program): TOU off, "selling first" with solar sell (PV surplus may be
      exported up to the export limit, the battery never is), charge/discharge currents at the site
      limits, no grid charging.
    * charge P to SOC s: TOU on, programs with grid charge, power P, SOC s; grid charging on with
      current P/V; discharge current 0.
    * discharge P down to SOC s: TOU on, programs with power P and SOC floor s; "selling first" with
      the export cap, so the battery covers the house and exports the rest of P within the limit.
    * hold: TOU off, charge and discharge currents 0, no grid charging.
    * emergency stop: as hold, export cap 0, and the inverter disabled (register 43 = 0).
    """

    rmap: RegisterMap
    nominal_voltage_v: float = 51.2
    max_current_a: float = 185.0
    name: str = "deye"

    def _volts(self, live: Live) -> tuple[float, float]:
        """(low, high) bounds of the battery voltage for power <-> current conversions."""
        v = live.battery_voltage_v or self.nominal_voltage_v
        if not 0.5 * self.nominal_voltage_v < v < 1.5 * self.nominal_voltage_v:  # implausible reading
            v = self.nominal_voltage_v
        return min(v, self.nominal_voltage_v) * 0.95, max(v * 1.05, self.nominal_voltage_v * 1.0625)

    def _limit_amps(self, limit_w: float, live: Live) -> float:
        """A current limit that cannot exceed ``limit_w`` at any plausible voltage (rounded down)."""
        return float(min(self.max_current_a, max(0, math.floor(limit_w / self._volts(live)[1]))))

    def _target_amps(self, power_w: float, limit_w: float, live: Live) -> float:
        """Enough current for ``power_w`` at the lowest plausible voltage (the program's power in W
        is what caps the flow exactly), never above the limit's current."""
        need = math.ceil(power_w / self._volts(live)[0])
        return float(min(need, self._limit_amps(limit_w, live)))

    def _programs(self, power_w: float, soc_pct: int, grid_charge: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        for n in range(1, 7):
            out[f"tou{n}_start_hhmm"] = (n - 1) * 400
            out[f"tou{n}_power_w"] = round(min(12000.0, max(0.0, power_w)))
            out[f"tou{n}_target_soc_pct"] = soc_pct
            out[f"tou{n}_grid_charge"] = 1 if grid_charge else 0
        return out

    def plan(self, target: Target, limits: SafetyLimits, live: Live) -> dict[str, float]:
        max_chg = self._limit_amps(limits.max_charge_w, live)
        max_dis = self._limit_amps(limits.max_discharge_w, live)
        export = round(min(12000.0, limits.export_limit_w))
        soc_min = math.ceil(limits.soc_min_pct)
        plan: dict[str, float] = {
            "inverter_enabled": 1,
            "battery_shutdown_soc_pct": soc_min,
            "work_mode": 0,
            "max_sell_power_w": export,
            "solar_sell_enabled": 1 if export > 0 else 0,
        }
        mode = target.mode
        if mode is BatteryMode.CHARGE:
            amps = self._target_amps(target.power_w, limits.max_charge_w, live)
            soc = target.target_soc_pct if target.target_soc_pct is not None else limits.soc_max_pct
            plan.update(
                tou_enabled=1,
                battery_max_charge_current_a=amps,
                battery_max_discharge_current_a=0,
                grid_charge_enabled=1,
                grid_charge_current_a=amps,
            )
            plan.update(self._programs(target.power_w, charge_target_pct(soc, limits.soc_max_pct), True))
        elif mode is BatteryMode.DISCHARGE:
            soc = target.target_soc_pct if target.target_soc_pct is not None else limits.soc_min_pct
            plan.update(
                tou_enabled=1,
                battery_max_charge_current_a=max_chg,
                battery_max_discharge_current_a=max_dis,
                grid_charge_enabled=0,
                grid_charge_current_a=0,
            )
            plan.update(self._programs(target.power_w, discharge_target_pct(soc, limits.soc_min_pct), False))
        elif mode is BatteryMode.HOLD:
            plan.update(
                tou_enabled=0,
                battery_max_charge_current_a=0,
                battery_max_discharge_current_a=0,
                grid_charge_enabled=0,
                grid_charge_current_a=0,
            )
        else:  # SELF_CONSUMPTION: the safe program
            plan.update(
                tou_enabled=0,
                battery_max_charge_current_a=max_chg,
                battery_max_discharge_current_a=max_dis,
                grid_charge_enabled=0,
                grid_charge_current_a=0,
            )
        return plan

    def emergency_stop_plan(self, limits: SafetyLimits) -> dict[str, float]:
        plan = self.plan(Target(BatteryMode.HOLD), limits, Live())
        plan["max_sell_power_w"] = 0
        plan["solar_sell_enabled"] = 0
        plan["inverter_enabled"] = 0
        return plan


def _runs(addresses: list[int], max_len: int) -> list[list[int]]:
    runs: list[list[int]] = []
    for a in sorted(addresses):
        if runs and a == runs[-1][-1] + 1 and len(runs[-1]) < max_len:
            runs[-1].append(a)
        else:
            runs.append([a])
    return runs


def _spans(addresses: list[int], max_len: int, max_gap: int) -> list[tuple[int, int]]:
    """(start, count) reads covering ``addresses``, reading through holes up to ``max_gap``."""
    spans: list[list[int]] = []
    for a in sorted(addresses):
        if spans and a - spans[-1][1] - 1 <= max_gap and a - spans[-1][0] + 1 <= max_len:
            spans[-1][1] = a
        else:
            spans.append([a, a])
    return [(lo, hi - lo + 1) for lo, hi in spans]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: dict[str, float]
    written_registers: int
    skipped_registers: int
    transactions: int
    bus_s: float  # first request sent to last reply received (pacing between them included)
    started: float = 0.0  # monotonic time the bus worker started the job


async def apply_plan(
    master: RtuMaster,
    rmap: RegisterMap,
    plan: Mapping[str, float],
    *,
    max_read: int = 96,
    max_gap: int = 16,
    max_write: int = 64,
    kind: str = "command",
) -> ApplyResult:
    """Read, compare, write only what differs, read back and verify. Raises ModbusError/VerifyError."""
    started = time.monotonic()
    points = [rmap[name] for name in plan]
    blocks = group_blocks(points, max_registers=max_read, max_gap=max_gap)
    current: dict[int, int] = {}
    tx = 0
    first_start: float | None = None
    for b in blocks:
        regs = await master.read_holding(b.start, b.count, kind=f"{kind}_read")
        first_start = first_start if first_start is not None else master.last_tx_start
        tx += 1
        current.update(zip(range(b.start, b.start + b.count), regs, strict=True))
    desired = dict(current)
    for name, value in plan.items():
        store_value(rmap[name], value, desired)  # masked points: read-modify-write on the word
    touched = {a for p in points for a in p.addresses}
    changed = sorted(a for a in touched if desired[a] != current[a])
    for run in _runs(changed, max_write):
        await master.write_registers(run[0], [desired[a] for a in run], kind=f"{kind}_write")
        tx += 1
    if changed:
        readback: dict[int, int] = {}
        for start, count in _spans(changed, max_read, max_gap):
            regs = await master.read_holding(start, count, kind=f"{kind}_readback")
            tx += 1
            readback.update(zip(range(start, start + count), regs, strict=True))
        wrong = [a for a in changed if readback[a] != desired[a]]
        if wrong:
            detail = ", ".join(f"{a}={readback[a]} (wanted {desired[a]})" for a in wrong[:5])
            raise VerifyError(f"read-back mismatch: {detail}", wrong)
        current.update({a: readback[a] for a in changed})
    applied = {p.name: decode_point(p, [current[a] for a in p.addresses]) for p in points}
    bus_s = master.last_tx_end - (first_start if first_start is not None else master.last_tx_end)
    return ApplyResult(applied, len(changed), len(touched) - len(changed), tx, bus_s, started)
