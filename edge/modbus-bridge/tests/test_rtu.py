"""The bridge's RTU master and bus against the real simulator over a socat pty pair, and the pymodbus
framing the master relies on (so a pymodbus upgrade that changes it fails here, not on a site)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    WriteMultipleRegistersRequest,
)

from nattery_bridge.bus import Bus, Priority
from nattery_bridge.metrics import Metrics
from nattery_bridge.rtu import (
    BadFrame,
    ExceptionReply,
    NoResponse,
    PortUnavailable,
    RtuMaster,
    Timing,
    framer,
)
from nattery_bridge.telemetry import telemetry_blocks
from nattery_contracts.modbus.registers import (
    Group,
    Kind,
    decode,
    decode_faults,
    decode_point,
    decode_text,
    group_blocks,
    load_profile,
)

RMAP = load_profile("deye-sunsynk-1ph")
FROZEN = ["--time-factor", "0"]


def master(port: Any, **kw: Any) -> RtuMaster:
    m = RtuMaster(
        str(port), 1, Timing(turnaround_s=0.03, margin_s=0.1, pacing_s=0.03), reopen_interval_s=0.2, **kw
    )
    m.open()
    return m


async def read_points(m: RtuMaster, max_registers: int, max_gap: int) -> dict[int, int]:
    regs: dict[int, int] = {}
    for b in group_blocks(
        [p for p in RMAP.points if p.addresses], max_registers=max_registers, max_gap=max_gap
    ):
        regs.update(zip(range(b.start, b.end + 1), await m.read_holding(b.start, b.count), strict=True))
    return regs


TOLERANCE = {
    "battery_soc_pct": 0.5,
    "battery_power_w": 0.5,
    "grid_power_w": 0.5,
    "load_power_w": 0.5,
    "pv_power_w": 1.0,
    "battery_voltage_v": 0.006,
    "battery_temperature_c": 0.06,
}


async def test_every_mapped_register_decodes_to_truth(rig_factory: Any) -> None:
    rig = rig_factory(*FROZEN, "--fault-code", "F13", "--fault-code", "F64")
    m = master(rig.bridge_port)
    try:
        regs = await read_points(m, 96, 24)
        truth = rig.truth()["truth"]
        values = decode(RMAP, 0, regs)
        # every numeric point decodes, and to the simulator's physics where it has one
        numeric = {p.name for p in RMAP.points if p.numeric}
        assert numeric <= set(values)
        checked = 0
        for name, true_value in truth.items():
            if name not in values:
                continue
            tol = TOLERANCE.get(name, 0.1 + 1e-9 if name.endswith("_kwh") else 0.5)
            assert values[name] == pytest.approx(true_value, abs=tol), name
            checked += 1
        assert checked >= 15
        assert values["battery_charge_energy_total_kwh"] > 6553.5  # the high word is exercised
        assert values["grid_import_energy_total_kwh"] == pytest.approx(
            truth["grid_import_energy_total_kwh"], abs=0.1
        )
        # identity, faults and power-on controls
        assert decode_text(RMAP, 0, regs)["serial_number"] == "SIM0000001"
        assert values["device_type"] == 3 and values["rated_power_w"] == 5000
        assert sorted(decode_faults(RMAP, 0, regs)["fault_codes"]) == ["F13", "F64"]
        assert values["work_mode"] == 2 and values["battery_shutdown_soc_pct"] == 10
        assert [values[f"tou{n}_start_hhmm"] for n in range(1, 7)] == [0, 400, 800, 1200, 1600, 2000]
        # block grouping at the edges: the first and last point of every telemetry block, read on its
        # own, gives the same words as the block read; tight blocks (no holes) decode the same values
        for group in (Group.FAST, Group.SLOW):
            for b in telemetry_blocks(RMAP, group, 96, 24):
                for name in {b.points[0], b.points[-1]}:
                    p = RMAP[name]
                    lo, hi = p.span
                    words = await m.read_holding(lo, hi - lo + 1)
                    assert [words[a - lo] for a in p.addresses] == [regs[a] for a in p.addresses], name
        tight = await read_points(m, 5, 0)
        assert decode(RMAP, 0, tight) == values
    finally:
        m.close()


def test_pymodbus_framing_the_master_relies_on() -> None:
    master = framer()
    slave = FramerRTU(DecodePDU(is_server=True))  # as the simulator's
    # requests: the classic CRC vector, and the largest FC16 an RTU ADU holds
    assert master.buildFrame(ReadHoldingRegistersRequest(address=0, count=10, dev_id=1)) == bytes.fromhex(
        "01030000000AC5CD"
    )
    fc16 = master.buildFrame(WriteMultipleRegistersRequest(address=0, registers=[0] * 123, dev_id=1))
    assert len(fc16) == 255
    with pytest.raises(ValueError):  # pymodbus refuses reads of more than 125 registers itself
        master.buildFrame(ReadHoldingRegistersRequest(address=0, count=126, dev_id=1))
    # a 60-register reply: "need more" (0 bytes used) until its last byte, in any chunking
    reply = slave.buildFrame(ReadHoldingRegistersResponse(registers=list(range(60)), dev_id=1))
    assert len(reply) == 125
    for chunk in (1, 16, 124):
        assert master.handleFrame(reply[:chunk], 0, 0) == (0, None)
    used, resp = master.handleFrame(reply, 0, 0)
    assert (
        used == 125 and isinstance(resp, ReadHoldingRegistersResponse) and resp.registers == list(range(60))
    )
    assert resp.dev_id == 1
    # a damaged CRC: every byte consumed, no PDU (the master's BadFrame)
    used, resp = master.handleFrame(reply[:-1] + bytes([reply[-1] ^ 0xFF]), 0, 0)
    assert used == 125 and resp is None
    # an exception reply (5 bytes) decodes as such, function code with the 0x80 bit
    used, resp = master.handleFrame(slave.buildFrame(ExceptionResponse(3, 2, device_id=1)), 0, 0)
    assert (
        used == 5
        and isinstance(resp, ExceptionResponse)
        and (resp.function_code, resp.exception_code)
        == (
            0x83,
            2,
        )
    )


async def test_master_refuses_writes_it_must_split() -> None:
    m = RtuMaster("/dev/null-not-opened", 1, Timing())
    with pytest.raises(ValueError, match=r"1\.\.123"):
        await m.write_registers(0, [0] * 124)
    with pytest.raises(ValueError, match="65535"):
        await m.write_registers(0, [0x10000])


def test_block_grouping_edges() -> None:
    for group in (Group.FAST, Group.SLOW):
        for gap in (0, 1, 8, 24):
            for size in (4, 5, 16, 96):
                blocks = telemetry_blocks(RMAP, group, size, gap)
                names = [n for b in blocks for n in b.points]
                assert sorted(names) == sorted(
                    p.name for p in RMAP.in_group(group) if p.addresses and p.kind is not Kind.ASCII
                )
                for b in blocks:
                    pts = [RMAP[n] for n in b.points]
                    # a block starts at its first point and ends at its last (no wasted edge registers)
                    assert b.start == min(p.span[0] for p in pts)
                    assert b.end == max(p.span[1] for p in pts)
                    assert b.count <= size
                    for p in pts:  # no point split across blocks
                        assert all(b.start <= a <= b.end for a in p.addresses)
    # the (78, 80) counter spans a foreign register and still lands whole
    slow = telemetry_blocks(RMAP, Group.SLOW, 3, 0)
    blk = next(b for b in slow if "grid_import_energy_total_kwh" in b.points)
    assert blk.start <= 78 and blk.end >= 80
    # default telemetry plan: 2 fast transactions, 2 slow
    assert [(b.start, b.count) for b in telemetry_blocks(RMAP, Group.FAST, 96, 24)] == [(59, 48), (150, 45)]


@pytest.mark.parametrize("gap_ms", [0, 2, 10, 16])
async def test_chunked_replies(rig_factory: Any, gap_ms: int) -> None:
    rig = rig_factory(*FROZEN, "--chunked", "--chunk-size", "16", "--chunk-gap-ms", str(gap_ms))
    m = master(rig.bridge_port)
    try:
        expected = None
        for _ in range(5):
            regs = await m.read_holding(150, 60)  # 125-byte reply: 8 chunks
            if expected is None:
                expected = regs
            assert regs == expected
        assert expected is not None
        soc = RMAP["battery_soc_pct"]
        assert decode_point(soc, [expected[184 - 150]]) == pytest.approx(
            rig.truth()["truth"]["battery_soc_pct"], abs=0.5
        )
        assert m.stats.get("timeout", 0) == 0 and m.stats.get("crc", 0) == 0 and m.stats.get("retry", 0) == 0
    finally:
        m.close()


async def test_crc_errors_timeouts_and_exception_replies_survived(rig_factory: Any) -> None:
    rig = rig_factory(*FROZEN)
    m = master(rig.bridge_port)
    try:
        good = await m.read_holding(182, 3)
        rig.control({"cmd": "set", "corrupt_crc_next": 1})
        assert await m.read_holding(182, 3) == good  # one retry
        assert m.stats["crc"] == 1 and m.stats["retry"] == 1
        rig.control({"cmd": "set", "corrupt_crc_next": 2})
        with pytest.raises(BadFrame):
            await m.read_holding(182, 3)
        assert await m.read_holding(182, 3) == good
        rig.control({"cmd": "set", "no_reply_next": 1})
        assert await m.read_holding(182, 3) == good
        rig.control({"cmd": "set", "no_reply_next": 2})
        timeouts = m.stats.get("timeout", 0)
        with pytest.raises(NoResponse):
            await m.read_holding(182, 3)
        # two attempts, each waiting (wire + turnaround + margin), not seconds: counted, not timed
        assert m.stats.get("timeout", 0) == timeouts + 2
        assert m.timing.timeout_s(8, 11) < 0.2
        assert await m.read_holding(182, 3) == good
        rig.control({"cmd": "set", "exception_next": 1, "exception_code": 6})
        with pytest.raises(ExceptionReply) as ei:
            await m.read_holding(182, 3)
        assert ei.value.code == 6
        with pytest.raises(ExceptionReply) as ei:
            await m.read_holding(690, 20)  # crosses the end of the register space
        assert ei.value.code == 2
        assert await m.read_holding(182, 3) == good
        # a write the device refuses is an exception, not a crash
        with pytest.raises(ExceptionReply):
            await m.write_registers(184, [99])  # SOC is read-only
        assert m.stats["exception_reply"] == 3 and m.stats["timeout"] == 3
    finally:
        m.close()


async def test_serial_port_disappears_and_comes_back(rig_factory: Any) -> None:
    rig = rig_factory(*FROZEN)
    m = master(rig.bridge_port)
    try:
        good = await m.read_holding(182, 3)
        rig.unplug()
        with pytest.raises((PortUnavailable, NoResponse)):
            for _ in range(3):
                await m.read_holding(182, 3)
        assert not rig.bridge_port.exists()
        with pytest.raises(PortUnavailable):
            await m.read_holding(182, 3)
        rig.replug()
        deadline = time.monotonic() + 5
        while True:
            try:
                regs = await m.read_holding(182, 3)
                break
            except (PortUnavailable, NoResponse):
                assert time.monotonic() < deadline, "port not reopened"
                await asyncio.sleep(0.1)
        assert regs == good
        assert m.stats["port_lost"] >= 1
    finally:
        m.close()


async def test_command_waits_only_for_the_transaction_in_flight(rig_factory: Any) -> None:
    rig = rig_factory(*FROZEN)
    m = master(rig.bridge_port)
    bus = Bus(m, Metrics())
    worker = asyncio.create_task(bus.run())
    order: list[str] = []

    def job(name: str, address: int, count: int) -> Any:
        async def run(mm: RtuMaster) -> list[int]:
            order.append(f"start {name}")
            r = await mm.read_holding(address, count)
            order.append(f"end {name}")
            return r

        return run

    try:
        polls = [asyncio.create_task(bus.submit(Priority.POLL, job(f"poll{i}", 150, 45))) for i in range(6)]
        await asyncio.sleep(0.05)  # poll0 on the wire
        cmd = asyncio.create_task(bus.submit(Priority.COMMAND, job("cmd", 210, 2)))
        estop = asyncio.create_task(bus.submit(Priority.EMERGENCY, job("estop", 43, 1)))
        await asyncio.gather(cmd, estop, *polls)
        assert order[:2] == ["start poll0", "end poll0"]
        assert order[2:6] == ["start estop", "end estop", "start cmd", "end cmd"]
    finally:
        worker.cancel()
        m.close()


async def test_pacing_starts_at_t35_and_learns_a_deaf_device(rig_factory: Any) -> None:
    """A device deaf for 20 ms after its reply: the master starts at t3.5 (3.65 ms at 9600 8N1), loses a
    few requests, backs off to just above what the device needs, and loses none after that."""
    rig = rig_factory(*FROZEN, "--deaf-after-reply-ms", "20")
    m = RtuMaster(str(rig.bridge_port), 1, Timing(turnaround_s=0.03, margin_s=0.1), reopen_interval_s=0.2)
    m.open()
    try:
        assert m.pacing_s == pytest.approx(m.timing.t35) and m.timing.t35 == pytest.approx(0.00365, abs=1e-4)
        good = await m.read_holding(182, 3)
        for _ in range(10):
            assert await m.read_holding(182, 3) == good  # lost requests are retried once
        learned = m.pacing_s
        assert 0.020 < learned <= 0.060
        lost = m.stats.get("timeout", 0)
        assert 1 <= lost <= 4 and m.pacer().backoffs == lost
        for _ in range(20):
            assert await m.read_holding(182, 3) == good
        assert m.stats.get("timeout", 0) == lost  # learned: nothing lost any more
        assert rig.truth()["stats"]["deaf"] == lost
        # a healthy device on the same settings stays at t3.5
        rig.control({"cmd": "set", "deaf_after_reply_ms": 0})
        m2 = RtuMaster(str(rig.bridge_port), 1, Timing(turnaround_s=0.03, margin_s=0.1))
        m.close()
        m2.open()
        try:
            for _ in range(10):
                await m2.read_holding(182, 3)
            assert m2.pacing_s == pytest.approx(m2.timing.t35) and not m2.stats.get("timeout")
        finally:
            m2.close()
    finally:
        m.close()
