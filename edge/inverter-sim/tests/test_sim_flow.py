from __future__ import annotations

from collections.abc import Callable

import pytest

from nattery_contracts.modbus import decode, decode_faults, encode, load_profile
from nattery_sim.testing import RtuMaster, SimProcess, read_request

Start = Callable[..., tuple[SimProcess, RtuMaster]]
FLOW = load_profile("flow-transmitter")


def test_flow_transmitter_floats(start_sim: Start) -> None:
    sim, m = start_sim(["--profile", "flow-transmitter", "--unit", "7", "--time-factor", "0"])
    truth = sim.control({"cmd": "advance", "seconds": 60})["truth"]  # one simulated minute, at once
    v = decode(FLOW, 0, m.read(7, 0, 16))
    assert v["flow_rate_m3_per_h"] == pytest.approx(truth["flow_rate_m3_per_h"], rel=1e-6)
    assert v["flow_total_m3"] == pytest.approx(truth["flow_total_m3"], rel=1e-6)
    assert v["flow_total_m3"] == pytest.approx(12 / 60, rel=0.1)  # 1 sim minute at ~12 m3/h
    assert 10 < v["temperature_c"] < 20
    assert v["status"] == 0
    # totalizer reset through a write
    r = m.write(7, 13, encode(FLOW["totalizer_reset"], 1))
    assert r is not None and not r.isError()
    assert decode(FLOW, 0, m.read(7, 0, 4))["flow_total_m3"] == 0
    # status bits from a raised fault
    sim.control({"cmd": "fault_codes", "raise": ["empty_pipe"]})
    assert decode_faults(FLOW, 10, m.read(7, 10, 1)) == {"status_flags": ["empty_pipe"]}
    assert m.request(read_request(1, 0, 1), timeout=0.3) is None  # unit 1 is not us
    assert sim.status()["stats"]["ignored_other_unit"] == 1


def test_flow_transmitter_low_word_first(start_sim: Start) -> None:
    sim, m = start_sim(["--profile", "flow-transmitter", "--word-order", "low_first", "--time-factor", "0"])
    truth = sim.status()["truth"]
    lo = FLOW.with_word_order("low_first")
    regs = m.read(1, 0, 6)
    assert decode(lo, 0, regs)["flow_rate_m3_per_h"] == pytest.approx(truth["flow_rate_m3_per_h"])
    assert decode(FLOW, 0, regs)["flow_rate_m3_per_h"] != pytest.approx(truth["flow_rate_m3_per_h"])
