"""Physics and control semantics without the serial line (fast)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, WriteMultipleRegistersRequest

from nattery_contracts.modbus import encode, load_profile
from nattery_sim.devices import BatteryConfig, DeyeInverter
from nattery_sim.profiles import SiteProfile

DEYE = load_profile("deye-sunsynk-1ph")
NOON = datetime(2026, 6, 21, 12, 30, tzinfo=UTC)


def inverter(**kw: float) -> DeyeInverter:
    site = SiteProfile(pv_kwp=kw.pop("pv_kwp", 6.0), load_scale=kw.pop("load_scale", 1.0))
    return DeyeInverter(DEYE, BatteryConfig(**kw), site)  # type: ignore[arg-type]


def put(d: DeyeInverter, name: str, value: float) -> None:
    p = DEYE[name]
    assert d.write(p.addresses[0], encode(p, value, current=d.regs[p.addresses[0]])) is None


def test_profiles_are_real_data() -> None:
    s = SiteProfile(pv_kwp=1.0)
    assert s.pv_w(datetime(2026, 1, 1, 0, 0)) == 0
    assert max(s.pv_w(datetime(2026, 6, 21, h)) for h in range(24)) > 300
    assert 100 < s.load_w(datetime(2026, 1, 1, 3, 0)) < 1500
    assert SiteProfile(load_scale=2.0).load_w(NOON) == pytest.approx(2 * s.load_w(NOON))


def test_zero_export_curtails_pv_when_full() -> None:
    d = inverter(start_soc_pct=100)
    d.tick(NOON, 0)
    assert d.battery_power_w == 0
    assert d.grid_w == pytest.approx(0, abs=1e-6)
    assert d.pv_w == pytest.approx(d.load_w)


def test_selling_first_exports_pv_up_to_max_sell() -> None:
    d = inverter(start_soc_pct=100, pv_kwp=8.0)
    put(d, "work_mode", 0)
    put(d, "solar_sell_enabled", 1)
    put(d, "max_sell_power_w", 500)
    d.tick(NOON, 0)
    assert d.grid_w == pytest.approx(-500)


def test_grid_charge_limited_by_grid_charge_current() -> None:
    d = inverter(start_soc_pct=30)
    night = datetime(2026, 1, 15, 2, tzinfo=UTC)
    for n in range(1, 7):
        put(d, f"tou{n}_grid_charge", 1)
        put(d, f"tou{n}_target_soc_pct", 80)
    put(d, "tou_enabled", 1)
    put(d, "grid_charge_current_a", 10)
    d.tick(night, 0)
    assert d.mode == "grid-charge"
    assert d.battery_power_w == pytest.approx(-10 * d.voltage_v, rel=0.02)


def test_slot_selection_wraps_midnight() -> None:
    d = inverter()
    for n, hhmm in enumerate([2330, 530, 900, 1200, 1600, 2000], start=1):
        put(d, f"tou{n}_start_hhmm", hhmm)
    put(d, "tou_enabled", 1)
    ctl = d.control()
    assert d.find_slot(ctl, datetime(2026, 1, 1, 1, 0)).index == 1  # type: ignore[union-attr]
    assert d.find_slot(ctl, datetime(2026, 1, 1, 23, 45)).index == 1  # type: ignore[union-attr]
    assert d.find_slot(ctl, datetime(2026, 1, 1, 22, 0)).index == 6  # type: ignore[union-attr]
    assert d.find_slot(ctl, datetime(2026, 1, 1, 5, 30)).index == 2  # type: ignore[union-attr]


def test_counters_accumulate_and_today_resets_at_midnight() -> None:
    d = inverter(start_soc_pct=50)
    t = datetime(2026, 6, 21, 22, 0, tzinfo=UTC)
    d.tick(t, 0)
    for _ in range(12):
        t += timedelta(minutes=10)
        d.tick(t, 600)
    tr = d.truth()
    assert tr["load_energy_total_kwh"] > 9000
    # 00:00:00: the energy up to midnight was the old day's; today starts from zero
    assert tr["load_energy_today_kwh"] == 0
    d.tick(t + timedelta(minutes=10), 600)
    tr2 = d.truth()
    assert tr2["load_energy_today_kwh"] == pytest.approx(
        tr2["load_energy_total_kwh"] - tr["load_energy_total_kwh"]
    )
    assert 0 < tr2["load_energy_today_kwh"] < tr2["load_energy_total_kwh"] - 9000
    assert d.get_value("load_energy_total_kwh") == pytest.approx(tr2["load_energy_total_kwh"], abs=0.1)


def test_temperature_rises_with_power_and_relaxes() -> None:
    d = inverter(start_soc_pct=50, ambient_c=20)
    night = datetime(2026, 1, 15, 2, tzinfo=UTC)
    put(d, "work_mode", 0)
    put(d, "solar_sell_enabled", 1)
    put(d, "tou_enabled", 1)
    for _ in range(6):
        d.tick(night, 600)
    hot = d.temperature_c
    assert hot > 25
    put(d, "battery_max_discharge_current_a", 0)
    for _ in range(12):
        d.tick(night, 600)
    assert d.temperature_c < hot - 5


def test_write_validation() -> None:
    d = inverter()
    assert d.write(211, [186]) is ExcCodes.ILLEGAL_VALUE
    assert d.write(184, [1]) is ExcCodes.ILLEGAL_ADDRESS
    assert d.write(244, [3]) is ExcCodes.ILLEGAL_VALUE
    assert d.write(210, [10, 20]) is None
    assert d.control()["battery_max_discharge_current_a"] == 20


async def read_pdu(d: DeyeInverter, address: int, count: int) -> object:
    """A read handled by pymodbus against the device's datastore, as the serial server does it."""
    return await ReadHoldingRegistersRequest(address=address, count=count).datastore_update(d.regs.context, 1)


async def test_datastore_serves_the_physics_registers() -> None:
    d = inverter(start_soc_pct=63)
    d.tick(NOON, 0)
    r = await read_pdu(d, 184, 1)
    assert not isinstance(r, ExceptionResponse) and r.registers == [63] == [d.regs[184]]  # type: ignore[attr-defined]
    r = await read_pdu(d, 0, 126)  # more than the device reads at once
    assert isinstance(r, ExceptionResponse) and r.exception_code == ExcCodes.ILLEGAL_VALUE
    r = await read_pdu(d, 699, 2)  # crosses the end of the register space
    assert isinstance(r, ExceptionResponse) and r.exception_code == ExcCodes.ILLEGAL_ADDRESS
    # a write through pymodbus lands in the same registers the physics obeys
    p = DEYE["battery_max_discharge_current_a"]
    r = await pymodbus_write(p.addresses[0], [0]).datastore_update(d.regs.context, 1)
    assert not r.isError() and d.control()["battery_max_discharge_current_a"] == 0
    r = await pymodbus_write(184, [1]).datastore_update(d.regs.context, 1)  # SOC: read-only
    assert isinstance(r, ExceptionResponse) and r.exception_code == ExcCodes.ILLEGAL_ADDRESS
    r = await pymodbus_write(211, [186]).datastore_update(d.regs.context, 1)  # above the point's max
    assert isinstance(r, ExceptionResponse) and r.exception_code == ExcCodes.ILLEGAL_VALUE
    assert d.control()["battery_max_discharge_current_a"] == 0  # refused writes change nothing


def pymodbus_write(address: int, values: list[int]) -> WriteMultipleRegistersRequest:
    return WriteMultipleRegistersRequest(address=address, registers=values, dev_id=1)


def test_inverter_clock_registers() -> None:
    from nattery_contracts.modbus import decode

    d = inverter()
    d.tick(datetime(2026, 3, 7, 14, 5, 9, tzinfo=UTC), 0)
    assert d.regs[22] == (26 << 8) | 3
    v = decode(DEYE, 22, [d.regs[22], d.regs[23], d.regs[24]])
    got = tuple(int(v[f"clock_{k}"]) for k in ("year", "month", "day", "hour", "minute", "second"))
    assert got == (2026, 3, 7, 14, 5, 9)


def test_separate_charge_discharge_limits_and_soc_ceiling() -> None:
    night = datetime(2026, 1, 15, 2, tzinfo=UTC)
    d = inverter(start_soc_pct=50, max_charge_w=1200, max_discharge_w=300, load_scale=3.0, max_soc_pct=60)
    d.tick(night, 0)
    assert d.battery_power_w == pytest.approx(300)  # load > 300 W: limited by max_discharge_w
    for n in range(1, 7):
        put(d, f"tou{n}_grid_charge", 1)
        put(d, f"tou{n}_target_soc_pct", 100)
    put(d, "tou_enabled", 1)
    d.tick(night, 0)
    assert d.battery_power_w == pytest.approx(-1200)
    for _ in range(20):
        d.tick(night, 600)
    assert d.soc_pct == pytest.approx(60)  # ceiling
    d.tick(night, 0)
    assert d.battery_power_w == 0
