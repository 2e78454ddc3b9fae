"""Unit tests without I/O: outbox budget, seq, envelope, Deye strategy, read-compare-write, units and
Home Assistant classes from the register map."""

from __future__ import annotations

from pathlib import Path

import pytest

from nattery_bridge import envelope
from nattery_bridge.control import DeyeStrategy, apply_plan
from nattery_bridge.discovery import display_name, ha_classes
from nattery_bridge.envelope import Live, Target
from nattery_bridge.store import Store
from nattery_contracts.modbus.registers import available_profiles, load_profile
from nattery_contracts.mqtt import BatteryMode, SafetyLimits

LIMITS = SafetyLimits(
    soc_min_pct=20,
    soc_max_pct=90,
    max_charge_w=3000,
    max_discharge_w=2500,
    battery_temp_min_c=5,
    battery_temp_max_c=45,
    export_limit_w=1000,
)


def test_outbox_seq_and_budget(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.sqlite3", budget_bytes=20_000)
    for _ in range(10):
        seq = store.next_seq()
        store.enqueue_telemetry("t", seq, b"x" * 100)
    store.enqueue("ack", "a", b"ack")
    assert store.next_seq() == 10
    rows = store.peek(100)
    assert [r.kind for r in rows][-1] == "ack"
    store.remove([r.id for r in rows[:3]])
    assert store.outbox_rows == 8
    store.close()
    # persisted across a restart
    store = Store(tmp_path / "b.sqlite3", budget_bytes=20_000)
    assert store.next_seq() == 10
    assert store.outbox_rows == 8
    # over budget: the oldest telemetry goes first, the ack stays
    dropped = None
    for i in range(200):
        d = store.enqueue_telemetry("t", 10 + i, b"y" * 100)
        dropped = dropped or d
    assert dropped is not None and dropped.rows > 0
    assert store.outbox_bytes <= 20_000
    kinds = [r.kind for r in store.peek(1000)]
    assert "ack" in kinds
    payloads = [r.payload for r in store.peek(1000) if r.kind == "telemetry"]
    assert payloads[-1] == b"y" * 100
    store.close()


def test_envelope_clamps_and_refuses() -> None:
    live = Live(soc_pct=50, battery_temp_c=25, battery_voltage_v=51)
    d = envelope.check(Target(BatteryMode.CHARGE, 5000, 99), LIMITS, live)
    assert d.allowed and d.clamped
    assert d.target.power_w == 3000 and d.target.target_soc_pct == 90
    assert "max_charge_w" in (d.reason or "") and "soc_max" in (d.reason or "")
    d = envelope.check(Target(BatteryMode.DISCHARGE, 1000, 5), LIMITS, live)
    assert d.allowed and d.target.target_soc_pct == 20
    d = envelope.check(Target(BatteryMode.DISCHARGE, 1000), LIMITS, Live(soc_pct=20, battery_temp_c=25))
    assert not d.allowed and "soc_min" in (d.reason or "")
    d = envelope.check(Target(BatteryMode.CHARGE, 1000), LIMITS, Live(soc_pct=50, battery_temp_c=50))
    assert not d.allowed and "temperature" in (d.reason or "")
    d = envelope.check(Target(BatteryMode.HOLD), LIMITS, Live(battery_temp_c=80))
    assert d.allowed
    assert envelope.from_power(-1500) == Target(BatteryMode.CHARGE, 1500)
    assert envelope.from_power(0).mode is BatteryMode.HOLD
    wider = LIMITS.model_copy(update={"max_charge_w": 9000})
    assert envelope.within(wider, LIMITS)
    assert not envelope.within(LIMITS, LIMITS)


class FakeMaster:
    """Register dict standing in for the bus (the real thing is tested over ptys)."""

    def __init__(self, regs: dict[int, int]) -> None:
        self.regs = regs
        self.writes: list[tuple[int, list[int]]] = []
        self.last_tx_start = 0.0
        self.last_tx_end = 0.0

    async def read_holding(self, address: int, count: int, kind: str = "") -> list[int]:
        return [self.regs.get(a, 0) for a in range(address, address + count)]

    async def write_registers(self, address: int, values: list[int], kind: str = "") -> None:
        self.writes.append((address, values))
        for i, v in enumerate(values):
            self.regs[address + i] = v


@pytest.mark.parametrize("mode", list(BatteryMode))
async def test_apply_plan_reads_compares_writes_only_changes(mode: BatteryMode) -> None:
    rmap = load_profile("deye-sunsynk-1ph")
    strategy = DeyeStrategy(rmap)
    target = Target(mode, 2000, 80 if mode is BatteryMode.CHARGE else None)
    plan = strategy.plan(target, LIMITS, Live(battery_voltage_v=50))
    master = FakeMaster({274 + i: 0b1000_0000 for i in range(6)})  # unrelated bit 7 must survive
    res = await apply_plan(master, rmap, plan)  # type: ignore[arg-type]
    assert res.written_registers > 0
    for name, value in plan.items():
        assert res.applied[name] == pytest.approx(value), name
    if mode is BatteryMode.CHARGE:
        assert all(master.regs[274 + i] & 0x80 for i in range(6))
        assert res.applied["grid_charge_enabled"] == 1
    master.writes.clear()
    again = await apply_plan(master, rmap, plan)  # type: ignore[arg-type]
    assert master.writes == [] and again.written_registers == 0


def test_deye_plans_respect_limits() -> None:
    rmap = load_profile("deye-sunsynk-1ph")
    s = DeyeStrategy(rmap)
    safe = s.plan(Target(BatteryMode.SELF_CONSUMPTION), LIMITS, Live(battery_voltage_v=50))
    assert safe["battery_shutdown_soc_pct"] == 20
    # currents that cannot exceed the W limits at the highest plausible voltage (54.4 V for 51.2 V)
    assert safe["battery_max_charge_current_a"] == 55 and safe["battery_max_discharge_current_a"] == 45
    charge = s.plan(Target(BatteryMode.CHARGE, 2000, 80), LIMITS, Live(battery_voltage_v=50))
    assert charge["grid_charge_current_a"] == 43 and charge["tou1_power_w"] == 2000  # ceil(2000 / 47.5)
    assert safe["max_sell_power_w"] == 1000 and safe["tou_enabled"] == 0 and safe["grid_charge_enabled"] == 0
    estop = s.emergency_stop_plan(LIMITS)
    assert estop["inverter_enabled"] == 0 and estop["battery_max_discharge_current_a"] == 0


@pytest.mark.parametrize(
    ("mode", "soc_pct", "soc_min_pct", "soc_max_pct", "program_pct"),
    [
        # towards where the slot goes: 50.475 rounded to the nearest (50) would charge no further
        (BatteryMode.CHARGE, 50.475, 20, 90, 51),
        (BatteryMode.CHARGE, 50.0, 20, 90, 50),  # already whole: not pushed a percent further
        (BatteryMode.DISCHARGE, 49.6, 20, 90, 49),
        (BatteryMode.DISCHARGE, 49.0, 20, 90, 49),
        # never past a fractional SOC limit, even if that means rounding the other way
        (BatteryMode.CHARGE, 85.2, 20, 85.5, 85),
        (BatteryMode.DISCHARGE, 20.5, 20.5, 90, 21),
    ],
)
def test_program_soc_rounds_towards_the_slot_and_stays_within_limits(
    mode: BatteryMode, soc_pct: float, soc_min_pct: float, soc_max_pct: float, program_pct: int
) -> None:
    limits = LIMITS.model_copy(update={"soc_min_pct": soc_min_pct, "soc_max_pct": soc_max_pct})
    plan = DeyeStrategy(load_profile("deye-sunsynk-1ph")).plan(
        Target(mode, 2000, soc_pct), limits, Live(battery_voltage_v=50)
    )
    assert {plan[f"tou{n}_target_soc_pct"] for n in range(1, 7)} == {program_pct}


# Names carry their unit as a suffix (ARCHITECTURE §3); the map says the same in ``unit:``.
NAME_SUFFIX_UNITS = {"_kwh": "kWh", "_pct": "%", "_hz": "Hz", "_w": "W", "_v": "V", "_a": "A", "_c": "°C"}


def test_every_point_named_with_a_unit_carries_it_in_the_map() -> None:
    checked = 0
    for profile in available_profiles():
        for p in load_profile(profile).points:
            unit = next((u for suffix, u in NAME_SUFFIX_UNITS.items() if p.name.endswith(suffix)), None)
            if unit is not None:
                assert p.unit == unit, f"{profile}: {p.name} has unit {p.unit!r}"
                checked += 1
    assert checked > 50


def test_home_assistant_classes_come_from_the_map_units() -> None:
    rmap = load_profile("deye-sunsynk-1ph")
    assert ha_classes(rmap["battery_soc_pct"]) == ("battery", "%", "measurement")  # the map's device_class
    assert ha_classes(rmap["battery_charge_energy_total_kwh"]) == ("energy", "kWh", "total_increasing")
    assert ha_classes(rmap["battery_temperature_c"]) == ("temperature", "°C", "measurement")
    assert ha_classes(rmap["inverter_state"]) is None  # no unit: no sensor
    assert ha_classes(load_profile("flow-transmitter")["flow_rate_m3_per_h"]) is None  # unit HA lacks here
    # the name without its unit suffix (the casing is what Home Assistant has always been sent)
    assert display_name(rmap["battery_soc_pct"]).lower() == "battery soc"
    assert display_name(rmap["pv_energy_total_kwh"]).lower() == "pv energy total"
