"""Simulated devices: registers plus physics. Synchronous (the server drives them).

Each device keeps its holding registers in pymodbus' datastore (:mod:`nattery_sim.datastore`), laid
out by the shared register map, so what it serves is exactly what ``nattery_contracts.modbus.decode``
expects; ``regs`` (address -> word) is the physics' view of the same registers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from pymodbus.constants import ExcCodes

from nattery_contracts.modbus import (
    EncodeError,
    Kind,
    Point,
    RegisterMap,
    check_range,
    decode_point,
    encode_faults,
    store_value,
)
from nattery_sim.clock import substeps
from nattery_sim.datastore import Registers
from nattery_sim.profiles import SiteProfile


class SimDevice:
    """Registers with map-driven write validation. Subclasses add physics in :meth:`tick`."""

    #: Function codes the device answers (Deye: FC03, FC06, FC16); others get exception 01.
    functions = frozenset({3, 6, 16})
    #: Longest physics sub-step, simulated seconds: a longer step (a high time factor, a stalled event
    #: loop, ``advance``) is integrated in sub-steps of at most this.
    max_step_s = 30.0

    def __init__(self, rmap: RegisterMap) -> None:
        self.rmap = rmap
        self.fault_codes: set[str] = set()
        self._writable_addrs = {a for p in rmap.writable_points for a in p.addresses}
        self._writable_numeric = [
            p for p in rmap.writable_points if p.numeric and p.kind is not Kind.DERIVED and p.addresses
        ]
        # Fault injection (server.py): when it returns True, a write is acknowledged but not stored.
        self.drop_write: Callable[[], bool] | None = None
        self.regs = Registers(rmap, self._on_access)
        self.reset_registers()

    # ------------------------------------------------------------ registers
    def initial_values(self) -> dict[str, float | str]:
        """Power-on values of points (controls at their defaults). Overridden by subclasses."""
        return {}

    def reset_registers(self) -> None:
        """Power-on state of every register (a device restart); physics state is kept."""
        self.regs.clear()
        for name, value in self.initial_values().items():
            store_value(self.rmap[name], value, self.regs)
        self.publish()

    def set_value(self, name: str, value: float | str) -> None:
        """Write a point into the registers, clamped to what its encoding can hold."""
        p = self.rmap[name]
        if isinstance(value, str):
            store_value(p, value, self.regs)
            return
        try:
            store_value(p, value, self.regs)
        except EncodeError:
            store_value(p, _clamp_to_encoding(p, value), self.regs)

    def get_value(self, name: str) -> float:
        p = self.rmap[name]
        return decode_point(p, [self.regs[a] for a in p.addresses])

    def control(self) -> dict[str, float]:
        """Current values of the writable points (what the device obeys)."""
        # decode_point per writable point: what decode() gives for them, without scanning every point
        # of the map twice per physics step
        regs = self.regs
        return {p.name: decode_point(p, [regs[a] for a in p.addresses]) for p in self._writable_numeric}

    def check_write(self, start: int, values: list[int]) -> ExcCodes | None:
        """Whether the register map allows writing ``values`` from ``start``: exception 02 if a register
        is not writable or a multi-register point would be written in part, 03 if a value is out of
        its point's range."""
        new = dict(zip(range(start, start + len(values)), values, strict=True))
        if any(a not in self._writable_addrs for a in new):
            return ExcCodes.ILLEGAL_ADDRESS
        for p in self._touched(new):
            if any(a not in new for a in p.addresses):
                return ExcCodes.ILLEGAL_ADDRESS  # partial write of a multi-register point
            try:
                check_range(p, decode_point(p, [new[a] for a in p.addresses]))
            except EncodeError:
                return ExcCodes.ILLEGAL_VALUE
        return None

    def _touched(self, addresses: Iterable[int]) -> list[Point]:
        return list({p.name: p for a in addresses for p in self.rmap.points_at(a) if p.writable}.values())

    def write(self, start: int, values: list[int]) -> ExcCodes | None:
        """Validate and apply a write (what FC06/FC16 do), all or nothing; then :meth:`on_written`."""
        if (exc := self.check_write(start, values)) is not None:
            return exc
        for a, v in zip(range(start, start + len(values)), values, strict=True):
            self.regs[a] = v
        self.on_written({p.name for p in self._touched(range(start, start + len(values)))})
        return None

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus' access hook, called before it reads or writes the registers (after its own checks:
        the range exists, a write touches no read-only register). Returns an exception code or None."""
        if set_values is None:
            return ExcCodes.ILLEGAL_VALUE if count > self.rmap.max_read_registers else None
        if count > self.rmap.max_write_registers:
            return ExcCodes.ILLEGAL_VALUE
        values = cast(list[int], set_values)
        exc = None
        if self.drop_write is None or not self.drop_write():
            exc = self.write(address, list(values))
        # pymodbus stores ``set_values`` after this hook: make that what the device now holds (the old
        # words for a dropped write, a self-clearing register already cleared by on_written)
        i = self.regs.offset(address)
        values[:] = current_registers[i : i + count]
        return exc

    def on_written(self, names: set[str]) -> None:
        """Hook: react to control writes (e.g. a totalizer reset)."""

    def poke(self, name: str, value: float) -> None:
        """Change a register behind the master's back (no write validation, no ``on_written``)."""
        self.set_value(name, value)

    def pin(self, values: dict[str, object]) -> None:
        """Pin (number) or release (None) physical state; devices without any reject every key."""
        keys = sorted(k for k in values if k != "cmd")
        if keys:
            raise KeyError(f"nothing to pin on this device: {keys}")

    def set_fault_codes(self, codes: set[str]) -> None:
        for p in self.rmap.points:
            if p.kind is Kind.BITFIELD:
                encode_faults(p, codes)  # validate
        self.fault_codes = set(codes)
        self.publish()

    # ------------------------------------------------------------ physics
    def tick(self, now: datetime, dt_s: float) -> None:
        """Advance physics by ``dt_s`` simulated seconds ending at ``now`` (in sub-steps of at most
        :attr:`max_step_s`) and publish registers."""
        self.publish()

    def publish(self) -> None:
        """Write the physics state into the registers."""

    def truth(self) -> dict[str, float]:
        """The physics state in Nattery names (unrounded), for tests and the control socket."""
        return {}


def _clamp_to_encoding(p: Point, value: float) -> float:
    lo, hi = {
        Kind.UINT16: (0, 0xFFFF),
        Kind.INT16: (-0x8000, 0x7FFF),
        Kind.UINT32: (0, 0xFFFF_FFFF),
        Kind.INT32: (-0x8000_0000, 0x7FFF_FFFF),
    }.get(p.kind, (-math.inf, math.inf))
    if p.mask is not None:
        lo, hi = 0, p.mask >> ((p.mask & -p.mask).bit_length() - 1)
    raw_lo, raw_hi = lo * p.scale + p.offset, hi * p.scale + p.offset
    v = min(max(value, raw_lo), raw_hi)
    if p.min is not None:
        v = max(v, p.min)
    if p.max is not None:
        v = min(v, p.max)
    return v


# ====================================================================== Deye single-phase hybrid


@dataclass
class BatteryConfig:
    capacity_kwh: float = 10.0
    max_power_w: float = 5000.0  # inverter rating; default for both battery limits below
    max_charge_w: float | None = None  # battery charge power limit (None: max_power_w)
    max_discharge_w: float | None = None  # battery discharge power limit (None: max_power_w)
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    start_soc_pct: float = 50.0
    min_soc_pct: float = 10.0  # power-on value of battery_shutdown_soc_pct (register 217)
    max_soc_pct: float = 100.0
    ambient_c: float = 20.0
    thermal_rise_c_per_kw: float = 3.0  # steady-state rise above ambient per kW of |power|
    thermal_tau_s: float = 1800.0
    nominal_voltage_v: float = 51.2
    internal_resistance_ohm: float = 0.02
    serial: str = "SIM0000001"
    initial_totals_kwh: dict[str, float] = field(
        default_factory=lambda: {
            # above 6553.5 kWh where it matters, so the high word of the 32-bit counters is exercised
            "battery_charge_energy_total_kwh": 6600.0,
            "battery_discharge_energy_total_kwh": 6200.0,
            "grid_import_energy_total_kwh": 7000.0,
            "grid_export_energy_total_kwh": 1500.0,
            "load_energy_total_kwh": 9000.0,
            "pv_energy_total_kwh": 4000.0,
        }
    )


@dataclass(frozen=True)
class Slot:
    index: int  # 1..6
    start_min: int
    end_min: int
    power_w: float
    target_soc_pct: float
    grid_charge: bool


_COUNTERS = ("battery_charge", "battery_discharge", "grid_import", "grid_export", "load", "pv")


class DeyeInverter(SimDevice):
    """Deye/Sunsynk single-phase hybrid with a battery, PV array and household load.

    Control semantics are documented in the package README ("Control semantics"); keep them in sync.
    """

    def __init__(self, rmap: RegisterMap, cfg: BatteryConfig, site: SiteProfile) -> None:
        self.cfg = cfg
        self.site = site
        self.soc_pct = cfg.start_soc_pct
        self.temperature_c = cfg.ambient_c
        self.battery_power_w = 0.0
        self.pv_w = 0.0
        self.load_w = 0.0
        self.grid_w = 0.0
        self.active_slot: Slot | None = None
        self._export_cap = 0.0
        self.now: datetime | None = None
        self.mode = "idle"
        self.energy_wh: dict[str, float] = {f"{c}_today": 0.0 for c in _COUNTERS}
        for name, kwh in cfg.initial_totals_kwh.items():
            self.energy_wh[name.removesuffix("_energy_total_kwh") + "_total"] = kwh * 1000
        for c in _COUNTERS:
            self.energy_wh.setdefault(f"{c}_total", 0.0)
        self._day: tuple[int, int, int] | None = None
        # A test may pin the battery temperature (a hot or frozen battery); None = thermal model.
        self.pinned_temperature_c: float | None = None
        super().__init__(rmap)

    def pin(self, values: dict[str, object]) -> None:
        """``temperature_c``: pin the battery temperature (None releases it to the thermal model);
        ``soc_pct``: set the state of charge once (it then follows the physics)."""
        for key, value in values.items():
            if key == "cmd":
                continue
            if key == "temperature_c":
                self.pinned_temperature_c = None if value is None else float(str(value))
                if self.pinned_temperature_c is not None:
                    self.temperature_c = self.pinned_temperature_c
            elif key == "soc_pct":
                self.soc_pct = min(100.0, max(0.0, float(str(value))))
            else:
                raise KeyError(f"cannot pin {key!r} (temperature_c, soc_pct)")
        self.publish()

    # ------------------------------------------------------------ power-on register values
    def initial_values(self) -> dict[str, float | str]:
        c = self.cfg
        max_a = min(185.0, math.ceil(c.max_power_w / 48.0))
        v: dict[str, float | str] = {
            "device_type": 3,
            "protocol_version": 0x0102,
            "serial_number": c.serial[:10],
            "rated_power_w": c.max_power_w,
            "grid_frequency_hz": 50.0,
            "grid_voltage_v": 240.0,
            "inverter_frequency_hz": 50.0,
            "grid_connected": 1,
            "inverter_state": 2,
            "bms_charge_current_limit_a": max_a,
            "bms_discharge_current_limit_a": max_a,
            # controls: factory-like defaults, self-consumption with zero export
            "inverter_enabled": 1,
            "max_solar_power_w": 12000,
            "battery_max_charge_current_a": max_a,
            "battery_max_discharge_current_a": max_a,
            "battery_equalization_voltage_v": 56.4,
            "battery_absorption_voltage_v": 56.4,
            "battery_float_voltage_v": 54.0,
            "battery_shutdown_voltage_v": 46.0,
            "battery_restart_voltage_v": 52.0,
            "battery_low_voltage_v": 47.5,
            "battery_shutdown_soc_pct": c.min_soc_pct,
            "battery_restart_soc_pct": min(100.0, c.min_soc_pct + 5),
            "battery_low_soc_pct": min(100.0, c.min_soc_pct + 10),
            "grid_charge_current_a": max_a,
            "grid_charge_enabled": 1,
            "priority_load": 1,
            "work_mode": 2,
            "max_sell_power_w": min(12000.0, c.max_power_w),
            "solar_sell_enabled": 0,
            "tou_enabled": 0,
        }
        for n in range(1, 7):
            v[f"tou{n}_start_hhmm"] = (n - 1) * 400
            v[f"tou{n}_power_w"] = min(12000.0, c.max_power_w)
            v[f"tou{n}_voltage_v"] = 49.0
            v[f"tou{n}_target_soc_pct"] = c.min_soc_pct
        return v

    # ------------------------------------------------------------ helpers
    @property
    def voltage_v(self) -> float:
        ocv = self.cfg.nominal_voltage_v - 3.2 + 6.4 * self.soc_pct / 100.0  # 48.0 .. 54.4 V for 51.2 V
        return ocv - self.cfg.internal_resistance_ohm * self.current_a_from(self.battery_power_w, ocv)

    @staticmethod
    def current_a_from(power_w: float, voltage_v: float) -> float:
        return power_w / voltage_v if voltage_v > 0 else 0.0

    def slots(self, ctl: dict[str, float]) -> list[Slot]:
        starts = [_hhmm_to_min(ctl[f"tou{n}_start_hhmm"]) for n in range(1, 7)]
        out = []
        for i in range(6):
            out.append(
                Slot(
                    index=i + 1,
                    start_min=starts[i],
                    end_min=starts[(i + 1) % 6],
                    power_w=ctl[f"tou{i + 1}_power_w"],
                    target_soc_pct=ctl[f"tou{i + 1}_target_soc_pct"],
                    grid_charge=bool(ctl[f"tou{i + 1}_grid_charge"]),
                )
            )
        return out

    def find_slot(self, ctl: dict[str, float], now: datetime) -> Slot | None:
        if not ctl["tou_enabled"]:
            return None
        m = now.hour * 60 + now.minute
        for s in self.slots(ctl):
            if s.start_min == s.end_min:
                continue
            if s.start_min < s.end_min:
                if s.start_min <= m < s.end_min:
                    return s
            elif m >= s.start_min or m < s.end_min:
                return s
        return None

    # ------------------------------------------------------------ physics
    def decide(self, now: datetime, ctl: dict[str, float] | None = None) -> None:
        """Set battery/PV/grid power for the present instant from the control registers (``ctl``:
        :meth:`control`, read again when not given)."""
        ctl = self.control() if ctl is None else ctl
        c = self.cfg
        self.load_w = self.site.load_w(now)
        if not ctl["inverter_enabled"]:
            self.pv_w = 0.0
            self.battery_power_w = 0.0
            self.grid_w = self.load_w
            self.active_slot = None
            self.mode = "off"
            return
        pv_avail = min(self.site.pv_w(now), ctl["max_solar_power_w"])
        v = self.voltage_v
        floor = max(ctl["battery_shutdown_soc_pct"], 0.0)
        charge_lim = min(c.max_charge_w or c.max_power_w, ctl["battery_max_charge_current_a"] * v)
        if self.soc_pct >= c.max_soc_pct:
            charge_lim = 0.0
        dis_lim = min(c.max_discharge_w or c.max_power_w, ctl["battery_max_discharge_current_a"] * v)
        slot = self.find_slot(ctl, now)
        self.active_slot = slot
        export_cap = ctl["max_sell_power_w"] if ctl["work_mode"] == 0 and ctl["solar_sell_enabled"] else 0.0
        gc_w = 0.0
        force_discharge = False
        if slot is not None:
            floor = max(floor, slot.target_soc_pct)
            dis_lim = min(dis_lim, slot.power_w)
            if slot.grid_charge and ctl["grid_charge_enabled"] and self.soc_pct < slot.target_soc_pct:
                gc_w = min(slot.power_w, charge_lim, ctl["grid_charge_current_a"] * v)
            force_discharge = ctl["work_mode"] == 0 and export_cap > 0
        if self.soc_pct <= floor:
            dis_lim = 0.0
        surplus = pv_avail - self.load_w
        if gc_w > 0:
            batt = -min(charge_lim, max(gc_w, surplus))
            self.mode = "grid-charge"
        elif surplus >= 0:
            batt = -min(surplus, charge_lim)
            self.mode = "pv-charge" if batt < 0 else "idle"
        else:
            batt = min(-surplus, dis_lim)
            self.mode = "self-consumption" if batt > 0 else "hold"
        if force_discharge and dis_lim > 0:
            forced = min(dis_lim, export_cap - surplus)
            if forced > batt:
                batt = forced
                self.mode = "sell"
        self._export_cap = export_cap
        pv = pv_avail
        export = pv + batt - self.load_w
        if export > export_cap and batt > 0:
            batt = max(0.0, batt - (export - export_cap))
            export = pv + batt - self.load_w
        if export > export_cap:
            pv = max(0.0, pv - (export - export_cap))  # curtail
        self.pv_w = pv
        self.battery_power_w = batt
        self.grid_w = self.load_w - pv - batt

    def tick(self, now: datetime, dt_s: float) -> None:
        # The controls cannot change inside one call (writes land between calls): read them once.
        ctl = self.control()
        for t0, t, h in substeps(now, dt_s, self.max_step_s):
            # The sub-step crosses no midnight: its energy belongs to the day it begins in, even when
            # it ends at 00:00:00 exactly.
            self._roll_day(t0)
            self.now = t
            self.decide(t, ctl)
            self._integrate(h, ctl)
        self._roll_day(now)  # *today* reads 0 from 00:00:00 on
        self.now = now
        if dt_s <= 0:
            self.decide(now, ctl)
        self.publish()

    def _roll_day(self, t: datetime) -> None:
        """Reset the *today* counters when ``t`` is on another day than the last energy counted."""
        day = (t.year, t.month, t.day)
        if self._day is not None and day != self._day:
            for k in _COUNTERS:
                self.energy_wh[f"{k}_today"] = 0.0
        self._day = day

    def _integrate(self, dt_s: float, ctl: dict[str, float] | None = None) -> None:
        c = self.cfg
        cap_wh = c.capacity_kwh * 1000.0
        p = self.battery_power_w
        hours = dt_s / 3600.0
        if p > 0:  # discharge: cells give p / eff
            floor = max((self.control() if ctl is None else ctl)["battery_shutdown_soc_pct"], 0.0)
            if self.active_slot is not None:
                floor = max(floor, self.active_slot.target_soc_pct)
            avail_wh = max(0.0, (self.soc_pct - floor) / 100 * cap_wh) * c.discharge_efficiency
            if p * hours > avail_wh:
                p = avail_wh / hours
            self.soc_pct -= p * hours / c.discharge_efficiency / cap_wh * 100
        elif p < 0:  # charge: cells take |p| * eff
            room_wh = max(0.0, (c.max_soc_pct - self.soc_pct) / 100 * cap_wh) / c.charge_efficiency
            if -p * hours > room_wh:
                p = -room_wh / hours
            self.soc_pct += -p * hours * c.charge_efficiency / cap_wh * 100
        if p != self.battery_power_w:  # hit a bound inside the step: average power, rebalance
            self.battery_power_w = p
            export = self.pv_w + p - self.load_w
            if export > self._export_cap:
                self.pv_w = max(0.0, self.pv_w - (export - self._export_cap))
            self.grid_w = self.load_w - self.pv_w - p
        self.soc_pct = min(max(self.soc_pct, 0.0), 100.0)
        # thermal: first-order towards ambient + rise proportional to |power|
        target = c.ambient_c + c.thermal_rise_c_per_kw * abs(p) / 1000.0
        k = 1.0 - math.exp(-dt_s / c.thermal_tau_s)
        self.temperature_c += (target - self.temperature_c) * k
        if self.pinned_temperature_c is not None:
            self.temperature_c = self.pinned_temperature_c
        e = self.energy_wh
        for key, wh in (
            ("battery_charge", max(-p, 0.0) * hours),
            ("battery_discharge", max(p, 0.0) * hours),
            ("grid_import", max(self.grid_w, 0.0) * hours),
            ("grid_export", max(-self.grid_w, 0.0) * hours),
            ("load", self.load_w * hours),
            ("pv", self.pv_w * hours),
        ):
            e[f"{key}_today"] += wh
            e[f"{key}_total"] += wh

    def publish(self) -> None:
        if not hasattr(self, "energy_wh"):
            return
        v = self.voltage_v
        pv1 = self.pv_w * 0.6
        values: dict[str, float] = {
            "battery_soc_pct": round(self.soc_pct),
            "battery_power_w": round(self.battery_power_w),
            "battery_voltage_v": v,
            "battery_current_a": self.current_a_from(self.battery_power_w, v),
            "battery_temperature_c": self.temperature_c,
            "pv1_power_w": round(pv1),
            "pv2_power_w": round(self.pv_w) - round(pv1),
            "pv1_voltage_v": 380.0 if self.pv_w > 0 else 0.0,
            "pv2_voltage_v": 380.0 if self.pv_w > 0 else 0.0,
            "pv1_current_a": pv1 / 380.0,
            "pv2_current_a": (self.pv_w - pv1) / 380.0,
            "grid_power_w": round(self.grid_w),
            "grid_ct_power_w": round(self.grid_w),
            "load_power_w": round(self.load_w),
            "inverter_power_w": round(self.pv_w + self.battery_power_w),
            "inverter_temperature_c": self.cfg.ambient_c + 5 + abs(self.pv_w + self.battery_power_w) / 1000,
            "inverter_state": 4 if self.fault_codes else 2,
        }
        for k, wh in self.energy_wh.items():
            counter, period = k.rsplit("_", 1)
            values[f"{counter}_energy_{period}_kwh"] = math.floor(wh / 100.0) / 10.0
        if self.now is not None:
            t = self.now
            values.update(
                clock_year=t.year, clock_month=t.month, clock_day=t.day,
                clock_hour=t.hour, clock_minute=t.minute, clock_second=t.second,
            )  # fmt: skip
        for name, val in values.items():
            self.set_value(name, val)
        store_value(self.rmap["fault_codes"], sorted(self.fault_codes), self.regs)

    def truth(self) -> dict[str, float]:
        t = {
            "battery_soc_pct": self.soc_pct,
            "battery_power_w": self.battery_power_w,
            "battery_voltage_v": self.voltage_v,
            "battery_temperature_c": self.temperature_c,
            "pv_power_w": self.pv_w,
            "load_power_w": self.load_w,
            "grid_power_w": self.grid_w,
            "active_slot": float(self.active_slot.index) if self.active_slot else 0.0,
        }
        for k, wh in self.energy_wh.items():
            counter, period = k.rsplit("_", 1)
            t[f"{counter}_energy_{period}_kwh"] = wh / 1000.0
        return t


def _hhmm_to_min(v: float) -> int:
    iv = int(v)
    return (iv // 100) * 60 + iv % 100


# ====================================================================== flow transmitter


@dataclass
class FlowConfig:
    mean_flow_m3_per_h: float = 12.0
    swing_m3_per_h: float = 3.0
    period_s: float = 600.0
    mean_temperature_c: float = 15.0


class FlowTransmitter(SimDevice):
    """Flow rate (sine around a mean), a totalizer integrating it, water temperature, status bits.

    Raised fault codes set bits in ``status`` (``empty_pipe`` also forces the flow to 0).
    """

    def __init__(self, rmap: RegisterMap, cfg: FlowConfig | None = None) -> None:
        self.cfg = cfg or FlowConfig()
        self.flow = self.cfg.mean_flow_m3_per_h
        self.total = 0.0
        self.temp = self.cfg.mean_temperature_c
        self.elapsed = 0.0
        super().__init__(rmap)

    def initial_values(self) -> dict[str, float | str]:
        return {"device_type": 0x0F01, "firmware_version": 1.02, "damping_s": 3}

    def on_written(self, names: set[str]) -> None:
        if "totalizer_reset" in names and self.get_value("totalizer_reset") == 1:
            self.total = 0.0
            self.set_value("totalizer_reset", 0)
            self.publish()

    max_step_s = 1.0  # the damping is seconds

    def tick(self, now: datetime, dt_s: float) -> None:
        damping = max(self.get_value("damping_s"), 0.0)
        for _, _, h in substeps(now, dt_s, self.max_step_s):
            self._step(h, damping)
        if dt_s <= 0:
            self._step(0.0, damping)
        self.publish()

    def _step(self, dt_s: float, damping: float) -> None:
        c = self.cfg
        self.elapsed += dt_s
        phase = 2 * math.pi * self.elapsed / c.period_s
        target = c.mean_flow_m3_per_h + c.swing_m3_per_h * math.sin(phase)
        if "empty_pipe" in self.fault_codes:
            target = 0.0
        k = 1.0 if damping == 0 or dt_s <= 0 else 1.0 - math.exp(-dt_s / damping)
        self.flow += (target - self.flow) * k
        self.total += self.flow * dt_s / 3600.0
        self.temp = c.mean_temperature_c + 1.5 * math.sin(phase / 7)

    def publish(self) -> None:
        if not hasattr(self, "total"):
            return
        self.set_value("flow_rate_m3_per_h", self.flow)
        self.set_value("flow_total_m3", self.total)
        self.set_value("temperature_c", self.temp)
        store_value(self.rmap["status_flags"], sorted(self.fault_codes), self.regs)

    def truth(self) -> dict[str, float]:
        return {"flow_rate_m3_per_h": self.flow, "flow_total_m3": self.total, "temperature_c": self.temp}
