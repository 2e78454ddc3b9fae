"""The inverter the back-test drives: what the bridge makes a Deye hybrid do with each instruction.

Written from the bridge's code and the inverter's documented control semantics, and tested against
them (``tests/test_backtest_inverter.py`` runs one day's schedule through the bridge's real
``DeyeStrategy`` + envelope and the simulator's real physics, and through this model):

1. The bridge (``edge/modbus-bridge``): ``slots.slot_target`` keeps power and target SOC only for
   CHARGE and DISCHARGE; ``envelope.check`` clamps power to the site's max and the target SOC into
   ``[soc_min, soc_max]``; ``DeyeStrategy.plan`` writes the registers when the target changes (currents
   computed from the battery voltage read at that moment, rounded so that no plausible voltage exceeds
   the limit, hence ~7% below the nominal power at 51 V), the SOC floor ``ceil(soc_min)``, the export cap
   ``min(12 kW, export limit)``, and for CHARGE/DISCHARGE six time-of-use programs carrying the power
   and the target SOC as a whole percent rounded towards where the slot goes (up for CHARGE, down
   for DISCHARGE, never past the SOC limits: ``nattery_contracts.modbus.programs``).
2. The inverter (``edge/inverter-sim`` README, "Control semantics", ``DeyeInverter.decide`` and
   ``_integrate``): per step, the charge/discharge limits from the written currents and the voltage,
   grid charging up to the program's power until its SOC target, forced discharge ("selling first")
   down to the program's SOC, self-consumption otherwise, PV curtailed only beyond the export cap.
   The battery's voltage curve (``nominal - 3.2 + 6.4 * SOC`` V, 20 mOhm) is the simulator's.

Not modelled: the battery's temperature (the envelope's window is wide enough for the back-test's
flows), Modbus/MQTT latency (instructions take effect at the slot start), inverter faults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nattery_contracts.modbus.programs import charge_target_pct, discharge_target_pct
from nattery_contracts.mqtt import BatteryMode
from nattery_trading.optimiser.instruction import SlotInstruction
from nattery_trading.optimiser.model import Battery, Site

MAX_REGISTER_W = 12000.0  # the Deye power registers (programs, sell cap, solar) hold at most 12 kW


@dataclass(frozen=True, slots=True)
class Registers:
    """The control registers ``DeyeStrategy.plan`` writes that the inverter's physics reads."""

    shutdown_soc_pct: float
    export_cap_w: float  # max_sell_power_w when work_mode 0 and solar selling, else 0
    charge_a: float
    discharge_a: float
    grid_charge_a: float
    grid_charge_enabled: bool
    tou: bool
    tou_power_w: float = 0.0
    tou_soc_pct: float = 0.0
    tou_grid_charge: bool = False


@dataclass
class SlotFlows:
    """Energy over one slot (kWh) and the SOC at its end."""

    charge_kwh: float = 0.0
    discharge_kwh: float = 0.0
    import_kwh: float = 0.0  # per step (a step never imports and exports at once)
    export_kwh: float = 0.0
    curtailed_kwh: float = 0.0
    soc_pct: float = 0.0

    @property
    def battery_kwh(self) -> float:  # > 0 discharged
        return self.discharge_kwh - self.charge_kwh

    @property
    def grid_kwh(self) -> float:  # > 0 imported
        return self.import_kwh - self.export_kwh


@dataclass
class DeyeModel:
    """One battery behind a Deye hybrid, driven by slot instructions through the bridge."""

    battery: Battery
    site: Site
    soc_pct: float
    nominal_voltage_v: float = 51.2
    internal_resistance_ohm: float = 0.02
    max_current_a: float = 185.0
    inverter_max_soc_pct: float = 100.0  # the inverter charges PV to 100 %: soc_max is not a register
    step_s: float = 300.0
    battery_power_w: float = 0.0
    _applied: tuple[BatteryMode, float, float | None] | None = None
    _regs: Registers | None = None

    # ---------------------------------------------------------------- battery
    def voltage_v(self) -> float:
        ocv = self.nominal_voltage_v - 3.2 + 6.4 * self.soc_pct / 100.0
        return ocv - self.internal_resistance_ohm * self.battery_power_w / ocv

    # ---------------------------------------------------------------- bridge
    def _volts(self, v: float) -> tuple[float, float]:  # DeyeStrategy._volts
        if not 0.5 * self.nominal_voltage_v < v < 1.5 * self.nominal_voltage_v:
            v = self.nominal_voltage_v
        return min(v, self.nominal_voltage_v) * 0.95, max(v * 1.05, self.nominal_voltage_v * 1.0625)

    def _limit_amps(self, limit_w: float, v: float) -> float:  # DeyeStrategy._limit_amps
        return float(min(self.max_current_a, max(0, math.floor(limit_w / self._volts(v)[1]))))

    def _target_amps(self, power_w: float, limit_w: float, v: float) -> float:
        need = math.ceil(power_w / self._volts(v)[0])
        return float(min(need, self._limit_amps(limit_w, v)))

    def target(self, inst: SlotInstruction) -> tuple[BatteryMode, float, float | None]:
        """``slots.slot_target`` then ``envelope.check`` (its clamps; temperature not modelled)."""
        b = self.battery
        soc_min, soc_max = b.soc_min_pct, b.soc_max_pct
        if inst.mode is BatteryMode.CHARGE:
            lim = b.max_charge_kw * 1000.0
            p = abs(inst.battery_power_w)
            p = lim if p <= 0 else min(p, lim)
            s = inst.target_soc_pct if inst.target_soc_pct is not None else soc_max
            return inst.mode, p, max(min(s, soc_max), soc_min)
        if inst.mode is BatteryMode.DISCHARGE:
            lim = b.max_discharge_kw * 1000.0
            p = abs(inst.battery_power_w)
            p = lim if p <= 0 else min(p, lim)
            s = inst.target_soc_pct if inst.target_soc_pct is not None else soc_min
            return inst.mode, p, min(max(s, soc_min), soc_max)
        return inst.mode, 0.0, None

    def registers(self, target: tuple[BatteryMode, float, float | None], v: float) -> Registers:
        """``DeyeStrategy.plan`` for this target at the battery voltage ``v`` read by the bridge."""
        b = self.battery
        mode, power_w, soc = target
        max_chg = self._limit_amps(b.max_charge_kw * 1000.0, v)
        max_dis = self._limit_amps(b.max_discharge_kw * 1000.0, v)
        export = round(min(MAX_REGISTER_W, self.site.export_limit_kw * 1000.0))
        shutdown = float(math.ceil(b.soc_min_pct))
        prog_w = float(round(min(MAX_REGISTER_W, max(0.0, power_w))))
        if mode is BatteryMode.CHARGE:
            amps = self._target_amps(power_w, b.max_charge_kw * 1000.0, v)
            return Registers(
                shutdown_soc_pct=shutdown,
                export_cap_w=float(export),
                charge_a=amps,
                discharge_a=0.0,
                grid_charge_a=amps,
                grid_charge_enabled=True,
                tou=True,
                tou_power_w=prog_w,
                tou_soc_pct=float(
                    charge_target_pct(soc if soc is not None else b.soc_max_pct, b.soc_max_pct)
                ),
                tou_grid_charge=True,
            )
        if mode is BatteryMode.DISCHARGE:
            s = soc if soc is not None else b.soc_min_pct
            return Registers(
                shutdown_soc_pct=shutdown,
                export_cap_w=float(export),
                charge_a=max_chg,
                discharge_a=max_dis,
                grid_charge_a=0.0,
                grid_charge_enabled=False,
                tou=True,
                tou_power_w=prog_w,
                tou_soc_pct=float(discharge_target_pct(s, b.soc_min_pct)),
            )
        if mode is BatteryMode.HOLD:
            return Registers(
                shutdown_soc_pct=shutdown,
                export_cap_w=float(export),
                charge_a=0.0,
                discharge_a=0.0,
                grid_charge_a=0.0,
                grid_charge_enabled=False,
                tou=False,
            )
        return Registers(  # SELF_CONSUMPTION: the safe program
            shutdown_soc_pct=shutdown,
            export_cap_w=float(export),
            charge_a=max_chg,
            discharge_a=max_dis,
            grid_charge_a=0.0,
            grid_charge_enabled=False,
            tou=False,
        )

    def refuses(self, inst: SlotInstruction) -> bool:
        """Whether the bridge rejects a new schedule whose current slot is ``inst``: the envelope
        checks the current slot's CHARGE/DISCHARGE against the SOC it reads (a whole percent), and a
        rejected schedule leaves the previous control running (``controller`` set_schedule)."""
        soc = round(self.soc_pct)
        if inst.mode is BatteryMode.CHARGE:
            return soc >= self.battery.soc_max_pct
        if inst.mode is BatteryMode.DISCHARGE:
            return soc <= self.battery.soc_min_pct
        return False

    def apply(self, inst: SlotInstruction, new_schedule: bool = False) -> Registers:
        """A new schedule is applied on receipt; within a schedule the bridge writes registers only
        when the slot's target changes (``controller.tick``)."""
        target = self.target(inst)
        if new_schedule or target != self._applied or self._regs is None:
            self._regs = self.registers(target, self.voltage_v())
            self._applied = target
        return self._regs

    # ---------------------------------------------------------------- inverter
    def step(self, regs: Registers, load_w: float, pv_w: float, dt_s: float, flows: SlotFlows) -> None:
        """``DeyeInverter.decide`` then ``_integrate`` for ``dt_s`` seconds of constant load and PV."""
        b = self.battery
        hw_chg, hw_dis = b.max_charge_kw * 1000.0, b.max_discharge_kw * 1000.0
        pv_avail = min(pv_w, MAX_REGISTER_W)
        v = self.voltage_v()
        floor = max(regs.shutdown_soc_pct, 0.0)
        charge_lim = min(hw_chg, regs.charge_a * v)
        if self.soc_pct >= self.inverter_max_soc_pct:
            charge_lim = 0.0
        dis_lim = min(hw_dis, regs.discharge_a * v)
        cap = regs.export_cap_w
        gc_w = 0.0
        force = False
        if regs.tou:
            floor = max(floor, regs.tou_soc_pct)
            dis_lim = min(dis_lim, regs.tou_power_w)
            if regs.tou_grid_charge and regs.grid_charge_enabled and self.soc_pct < regs.tou_soc_pct:
                gc_w = min(regs.tou_power_w, charge_lim, regs.grid_charge_a * v)
            force = cap > 0
        if self.soc_pct <= floor:
            dis_lim = 0.0
        surplus = pv_avail - load_w
        if gc_w > 0:
            batt = -min(charge_lim, max(gc_w, surplus))
        elif surplus >= 0:
            batt = -min(surplus, charge_lim)
        else:
            batt = min(-surplus, dis_lim)
        if force and dis_lim > 0:
            batt = max(batt, min(dis_lim, cap - surplus))
        pv = pv_avail
        export = pv + batt - load_w
        if export > cap and batt > 0:
            batt = max(0.0, batt - (export - cap))
            export = pv + batt - load_w
        if export > cap:
            pv = max(0.0, pv - (export - cap))
        # integrate: the cells stop at the floor (shutdown SOC and the program's target) and at 100 %
        cap_wh = b.capacity_kwh * 1000.0
        hours = dt_s / 3600.0
        p = batt
        if p > 0:
            avail_wh = max(0.0, (self.soc_pct - floor) / 100 * cap_wh) * b.discharge_efficiency
            p = min(p, avail_wh / hours)
            self.soc_pct -= p * hours / b.discharge_efficiency / cap_wh * 100
        elif p < 0:
            room_wh = (
                max(0.0, (self.inverter_max_soc_pct - self.soc_pct) / 100 * cap_wh) / b.charge_efficiency
            )
            p = max(p, -room_wh / hours)
            self.soc_pct += -p * hours * b.charge_efficiency / cap_wh * 100
        if p != batt:  # hit a bound inside the step: average power, rebalance
            export = pv + p - load_w
            if export > cap:
                pv = max(0.0, pv - (export - cap))
        self.soc_pct = min(max(self.soc_pct, 0.0), 100.0)
        self.battery_power_w = p
        grid = load_w - pv - p
        flows.charge_kwh += max(-p, 0.0) * hours / 1000.0
        flows.discharge_kwh += max(p, 0.0) * hours / 1000.0
        flows.import_kwh += max(grid, 0.0) * hours / 1000.0
        flows.export_kwh += max(-grid, 0.0) * hours / 1000.0
        flows.curtailed_kwh += (pv_w - pv) * hours / 1000.0

    def run_slot(
        self,
        inst: SlotInstruction,
        load_w: list[float],
        pv_w: list[float],
        slot_s: float,
        new_schedule: bool = False,
    ) -> SlotFlows:
        """Run one slot: the instruction at its start, then ``len(load_w)`` equal segments of constant
        load and PV (one per slot in the back-test, finer in the test against the simulator), each cut
        into steps of at most ``step_s``."""
        regs = self.apply(inst, new_schedule)
        flows = SlotFlows()
        seg_s = slot_s / len(load_w)
        n = max(1, math.ceil(seg_s / self.step_s - 1e-9))
        for lw, pw in zip(load_w, pv_w, strict=True):
            for _ in range(n):
                self.step(regs, lw, pw, seg_s / n, flows)
        flows.soc_pct = self.soc_pct
        return flows
