"""The simulator over real socat pty pairs, read and written with pymodbus' frames.

No test waits for time to pass: the physics is frozen (``--time-factor 0``) and driven by the control
socket (``status`` re-decides the inverter's power from its registers, ``advance`` runs simulated
seconds at once); a device state that ends by itself (a restart's silence, the pause after a reply)
is waited for by asking the device until it answers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse

from nattery_contracts.modbus import (
    decode,
    decode_faults,
    decode_text,
    encode,
    group_blocks,
    load_profile,
    t35_s,
    transaction_time_s,
)
from nattery_sim.testing import (
    RtuMaster,
    SimProcess,
    crc_ok,
    decode_response,
    read_request,
    wait_for,
    with_crc,
    write_request,
)

Start = Callable[..., tuple[SimProcess, RtuMaster]]
DEYE = load_profile("deye-sunsynk-1ph")
NIGHT = ["--start-time", "2026-01-15T02:00:00+00:00"]  # no PV


def read_all(
    master: RtuMaster, groups: tuple[str, ...] = ("fast", "slow", "identity", "control")
) -> dict[int, int]:
    regs: dict[int, int] = {}
    for b in group_blocks(DEYE.in_group(*groups), max_gap=16):
        regs.update(zip(range(b.start, b.start + b.count), master.read(1, b.start, b.count), strict=True))
    return regs


def write_point(master: RtuMaster, name: str, value: float, regs: dict[int, int] | None = None) -> None:
    p = DEYE[name]
    cur = regs.get(p.addresses[0]) if regs and p.mask is not None else None
    if p.mask is not None and cur is None:
        cur = master.read(1, p.addresses[0], 1)[0]
    resp = master.write(1, p.addresses[0], encode(p, value, current=cur))
    assert resp is not None and not resp.isError(), resp


def test_reads_decode_to_truth(start_sim: Start) -> None:
    sim, m = start_sim(
        [
            "--time-factor",
            "0",
            "--start-time",
            "2026-06-21T12:30:00+00:00",
            "--pv-kwp",
            "5",
            "--serial",
            "2207123456",
            "--start-soc-pct",
            "63",
        ]
    )
    regs = read_all(m)
    values = decode(DEYE, 0, regs)
    truth = sim.status()["truth"]
    assert values["battery_soc_pct"] == round(truth["battery_soc_pct"]) == 63
    for k in ("battery_power_w", "pv_power_w", "load_power_w", "grid_power_w"):
        assert values[k] == pytest.approx(truth[k], abs=1.5), k
    assert values["pv_power_w"] > 500  # midsummer noon
    assert values["pv_power_w"] == values["pv1_power_w"] + values["pv2_power_w"]
    assert values["battery_power_w"] < 0  # surplus PV charges the battery
    assert values["battery_voltage_v"] == pytest.approx(truth["battery_voltage_v"], abs=0.01)
    assert values["battery_temperature_c"] == pytest.approx(truth["battery_temperature_c"], abs=0.1)
    assert values["grid_import_energy_total_kwh"] == pytest.approx(7000.0)  # (78, 80), > 6553.5 kWh
    assert values["rated_power_w"] == 5000
    assert decode_text(DEYE, 0, regs) == {"serial_number": "2207123456"}
    assert decode_faults(DEYE, 0, regs) == {"fault_codes": []}
    assert values["work_mode"] == 2 and values["tou_enabled"] == 0


def test_reply_timing_is_at_least_wire_time(start_sim: Start) -> None:
    _, m = start_sim(["--time-factor", "0", "--turnaround-ms", "30"])
    for count in (1, 60, 125):
        m.read(1, 100, count)
        wire = transaction_time_s(8, 5 + 2 * count, 9600) - t35_s(9600)  # t3.5 after the reply is ours
        assert m.last_elapsed >= wire + 0.030 - 0.002, (count, m.last_elapsed)


def exception_code(r: object) -> int | None:
    return r.exception_code if isinstance(r, ExceptionResponse) else None


def test_exceptions_and_silence(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0"])
    r = m.request(read_request(1, 690, 20))  # crosses the end of the register space
    assert exception_code(r) == ExcCodes.ILLEGAL_ADDRESS
    r = m.write(1, 184, [10])  # SOC is read-only
    assert exception_code(r) == ExcCodes.ILLEGAL_ADDRESS
    r = m.write(1, 211, [186])  # max discharge current 0..185
    assert exception_code(r) == ExcCodes.ILLEGAL_VALUE
    r = m.write(1, 250, [1260])  # 12:60 is not a time
    assert exception_code(r) == ExcCodes.ILLEGAL_VALUE
    r = m.request(with_crc(bytes([1, 0x05, 0, 1, 0xFF, 0])))  # FC05 write coil: unsupported
    assert exception_code(r) == ExcCodes.ILLEGAL_FUNCTION and r is not None and r.function_code == 0x85
    r = m.request(with_crc(bytes([1, 0x11])))  # FC17 report id: unsupported
    assert exception_code(r) == ExcCodes.ILLEGAL_FUNCTION
    r = m.request(with_crc(bytes([1, 0x41, 1, 2])))  # a function nobody can size: framed by silence
    assert exception_code(r) == ExcCodes.ILLEGAL_FUNCTION and r is not None and r.function_code == 0xC1
    r = m.request(with_crc(bytes([1, 0x03, 0, 0, 0, 126])))  # 126 registers: pymodbus refuses to decode
    assert exception_code(r) == ExcCodes.ILLEGAL_VALUE
    before = sim.status()["stats"]
    assert m.request(read_request(2, 0, 1), timeout=0.3) is None  # other unit: silence
    bad = bytearray(read_request(1, 0, 1))
    bad[-1] ^= 0xFF
    assert m.request(bytes(bad), timeout=0.3) is None  # bad CRC: silence
    after = sim.status()["stats"]
    assert after["ignored_other_unit"] == before["ignored_other_unit"] + 1
    assert after["bad_crc"] == before["bad_crc"] + 1
    assert m.read(1, 184, 1)  # still serving
    r = m.write(1, 250, [100, 200, 300])  # FC16 over three TOU start times
    assert r is not None and (r.address, r.count) == (250, 3)
    assert m.read(1, 250, 3) == [100, 200, 300]
    r = m.write_single(1, 244, 0)
    assert r is not None and r.registers == [0] and m.read(1, 244, 1) == [0]


def _truth(sim: SimProcess) -> dict[str, float]:
    t: dict[str, float] = sim.status()["truth"]
    return t


def _all_slots(m: RtuMaster, *, power: int, target: int, grid_charge: int) -> None:
    for n in range(1, 7):
        write_point(m, f"tou{n}_power_w", power)
        write_point(m, f"tou{n}_target_soc_pct", target)
        write_point(m, f"tou{n}_grid_charge", grid_charge)


def test_tou_grid_charge_charges_from_grid(start_sim: Start) -> None:
    sim, m = start_sim([*NIGHT, "--time-factor", "0", "--start-soc-pct", "40", "--capacity-kwh", "10"])
    before = _truth(sim)
    assert before["battery_power_w"] > 0  # night: self-consumption discharges
    _all_slots(m, power=3000, target=100, grid_charge=1)
    write_point(m, "tou_enabled", 1)
    t = _truth(sim)  # status re-decides from the registers just written
    assert t["battery_power_w"] == pytest.approx(-3000, abs=1)  # min(slot power, 105 A x V)
    assert t["grid_power_w"] == pytest.approx(t["load_power_w"] + 3000, abs=1)
    v = decode(DEYE, 0, read_all(m, ("fast",)))
    assert v["battery_power_w"] == pytest.approx(-3000, abs=1)
    soc0 = t["battery_soc_pct"]
    st = sim.control({"cmd": "advance", "seconds": 1200})  # 20 sim minutes at 3 kW, 95 % into the cells
    assert st["truth"]["battery_soc_pct"] == pytest.approx(soc0 + 9.5, abs=0.01)
    # the max charge current limits the power: 20 A x ~51 V
    write_point(m, "battery_max_charge_current_a", 20)
    t = _truth(sim)
    assert t["battery_power_w"] == pytest.approx(-20 * t["battery_voltage_v"], rel=0.03)
    # grid charge disabled globally (232) -> no grid charging, battery holds at night (SOC < target)
    write_point(m, "grid_charge_enabled", 0)
    t = _truth(sim)
    assert t["battery_power_w"] == pytest.approx(0, abs=1)
    assert t["grid_power_w"] == pytest.approx(t["load_power_w"], abs=1)


def test_selling_first_discharges_to_target_and_hold(start_sim: Start) -> None:
    sim, m = start_sim([*NIGHT, "--time-factor", "0", "--start-soc-pct", "80"])
    _all_slots(m, power=2500, target=20, grid_charge=0)
    write_point(m, "work_mode", 0)
    write_point(m, "solar_sell_enabled", 1)
    write_point(m, "tou_enabled", 1)
    t = _truth(sim)
    assert t["battery_power_w"] == pytest.approx(2500, abs=1)
    assert t["grid_power_w"] == pytest.approx(t["load_power_w"] - 2500, abs=1) and t["grid_power_w"] < 0
    # zero export to CT: the battery only covers the load
    write_point(m, "work_mode", 2)
    t = _truth(sim)
    assert t["battery_power_w"] == pytest.approx(t["load_power_w"], abs=1)
    assert t["grid_power_w"] == pytest.approx(0, abs=1)
    # hold: max discharge current 0 -> the battery does not discharge, the grid feeds the load
    write_point(m, "battery_max_discharge_current_a", 0)
    t = _truth(sim)
    assert t["battery_power_w"] == pytest.approx(0, abs=1)
    assert t["grid_power_w"] == pytest.approx(t["load_power_w"], abs=1)
    # target SOC above current SOC without grid charge also holds
    write_point(m, "battery_max_discharge_current_a", 100)
    _all_slots(m, power=2500, target=90, grid_charge=0)
    assert _truth(sim)["battery_power_w"] == pytest.approx(0, abs=1)


def test_discharge_stops_at_shutdown_soc(start_sim: Start) -> None:
    sim, _ = start_sim(
        [*NIGHT, "--time-factor", "0", "--start-soc-pct", "14", "--capacity-kwh", "1", "--load-scale", "4"]
    )
    t = sim.control({"cmd": "advance", "seconds": 5400, "step_s": 5})["truth"]  # 1.5 h of night load
    assert t["battery_soc_pct"] == pytest.approx(10, abs=0.01)
    assert t["battery_power_w"] == pytest.approx(0, abs=1)
    assert t["battery_discharge_energy_today_kwh"] == pytest.approx(0.04 * 0.95, abs=0.002)


def test_fault_injection(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0", "--turnaround-ms", "5"])
    req = read_request(1, 100, 60)
    # no reply for the next 2 requests
    sim.control({"cmd": "set", "no_reply_next": 2})
    assert m.request(req, timeout=0.4) is None
    assert m.request(req, timeout=0.4) is None
    assert sim.status()["stats"]["dropped"] == 2
    assert m.request(req) is not None
    # corrupted CRC
    sim.control({"cmd": "set", "corrupt_crc_next": 1})
    raw = m.transact(req)
    assert raw is not None and len(raw) == 125
    with pytest.raises(ValueError, match="bad CRC"):
        decode_response(raw)
    assert not crc_ok(raw)
    # exception replies
    sim.control({"cmd": "set", "exception_next": 1, "exception_code": 6})
    r = m.request(req)
    assert exception_code(r) == ExcCodes.DEVICE_BUSY
    # chunked delivery: 125 bytes in 16-byte pieces 16 ms apart (8 pieces, 7 gaps)
    sim.control({"cmd": "set", "chunked": True})
    raw = m.transact(req)
    assert raw is not None and len(raw) == 125
    assert decode_response(raw).registers
    wire = transaction_time_s(8, 125, 9600) - t35_s(9600) + 0.005
    assert m.last_elapsed >= wire + 7 * 0.016 - 0.002  # lower bound: holds on a loaded machine
    assert len(m.last_chunks) >= 2  # the reply really arrived in pieces
    sim.control({"cmd": "clear"})
    raw = m.transact(req)
    assert raw is not None and len(m.last_chunks) <= 2
    # probability 1.0 == always
    sim.control({"cmd": "set", "no_reply_probability": 1.0})
    assert m.request(req, timeout=0.3) is None
    sim.control({"cmd": "clear"})
    assert m.request(req) is not None


def test_fault_codes(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0", "--fault-code", "F35"])
    assert decode_faults(DEYE, 103, m.read(1, 103, 4)) == {"fault_codes": ["F35"]}
    assert m.read(1, 59, 1) == [4]  # inverter state: fault
    sim.control({"cmd": "fault_codes", "raise": ["F13", "F64"], "clear": ["F35"]})
    assert decode_faults(DEYE, 103, m.read(1, 103, 4)) == {"fault_codes": ["F13", "F64"]}
    sim.control({"cmd": "fault_codes", "set": []})
    assert m.read(1, 59, 1) == [2]
    r = sim.control({"cmd": "fault_codes", "raise": ["F99"]})
    assert not r["ok"]


def test_restart_resets_registers_and_goes_silent(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0"])
    write_point(m, "battery_max_discharge_current_a", 0)
    write_point(m, "tou_enabled", 1)
    assert m.read(1, 211, 1) == [0]
    soc = m.read(1, 184, 1)
    st = sim.control({"cmd": "restart", "seconds": 1.0})
    assert st["silent"]
    assert m.request(read_request(1, 211, 1), timeout=0.3) is None  # restarting: no reply
    # the device comes back by itself: ask until it answers
    resp = wait_for(lambda: m.request(read_request(1, 211, 1), timeout=0.2), 10, "the restarted device")
    assert not sim.status()["silent"]
    assert resp.registers[0] == DEYE_DEFAULT_MAX_A
    assert m.read(1, 248, 1) == [0]
    assert m.read(1, 184, 1) == soc  # the battery itself is not reset


DEYE_DEFAULT_MAX_A = 105  # ceil(5000 W / 48 V)


def test_fc16_limits(start_sim: Start) -> None:
    _, m = start_sim(["--time-factor", "0"])
    r = m.request(write_request(1, 250, [0] * 123))
    assert exception_code(r) == ExcCodes.ILLEGAL_ADDRESS  # 250..372 not all writable
    r = m.request(write_request(1, 250, [0] * 124))  # more than FC16 carries
    assert exception_code(r) == ExcCodes.ILLEGAL_VALUE
    assert m.read(1, 0, 125)


def test_battery_pin_poke_ignored_writes_silent_registers_and_deafness(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0", "--turnaround-ms", "5"])
    temp = DEYE["battery_temperature_c"]
    # a hot battery, pinned by the test; the thermal model takes over again when released
    st = sim.control({"cmd": "battery", "temperature_c": 55.5})
    assert st["ok"] and st["truth"]["battery_temperature_c"] == 55.5
    assert decode(DEYE, temp.addresses[0], m.read(1, temp.addresses[0], 1))["battery_temperature_c"] == 55.5
    st = sim.control({"cmd": "battery", "temperature_c": None, "soc_pct": 42})
    assert st["truth"]["battery_soc_pct"] == 42
    assert not sim.control({"cmd": "battery", "voltage_v": 3})["ok"]
    # a register changed behind the master's back
    sim.control({"cmd": "poke", "name": "battery_max_charge_current_a", "value": 7})
    assert m.read(1, DEYE["battery_max_charge_current_a"].addresses[0], 1) == [7]
    # a write that is acknowledged but does not take: the read-back shows the old value
    sim.control({"cmd": "set", "ignore_writes_next": 1})
    write_point(m, "battery_max_charge_current_a", 50)
    assert m.read(1, DEYE["battery_max_charge_current_a"].addresses[0], 1) == [7]
    write_point(m, "battery_max_charge_current_a", 50)
    assert m.read(1, DEYE["battery_max_charge_current_a"].addresses[0], 1) == [50]
    assert sim.status()["stats"]["ignored_writes"] == 1
    # reads touching a silenced register get no reply; other reads are answered
    sim.control({"cmd": "set", "silent_registers": [182]})
    assert m.request(read_request(1, 150, 45), timeout=0.4) is None
    assert m.request(read_request(1, 59, 48)) is not None
    sim.control({"cmd": "clear"})
    assert m.request(read_request(1, 150, 45)) is not None
    # deaf after its own reply: a request right after a reply is lost, one after the pause answered
    sim.control({"cmd": "set", "deaf_after_reply_ms": 300})
    req = read_request(1, 184, 1)
    wait_for(lambda: m.request(req, timeout=0.2), 10, "a reply after the device's pause")
    deaf = sim.status()["stats"]["deaf"]
    assert m.request(req, timeout=0.2) is None  # sent at once after that reply: lost
    assert sim.status()["stats"]["deaf"] == deaf + 1
    wait_for(lambda: m.request(req, timeout=0.2), 10, "a reply after the device's pause")
