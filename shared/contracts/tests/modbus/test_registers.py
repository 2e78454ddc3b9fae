from __future__ import annotations

import math

import pytest

from nattery_contracts.modbus import (
    Block,
    EncodeError,
    Group,
    Kind,
    Point,
    RegisterMap,
    WordOrder,
    available_profiles,
    decode,
    decode_faults,
    decode_point,
    decode_text,
    encode,
    encode_faults,
    encode_text,
    group_blocks,
    load_profile,
    store_value,
)

DEYE = load_profile("deye-sunsynk-1ph")
FLOW = load_profile("flow-transmitter")


def _p(name: str, *addrs: int, kind: Kind = Kind.UINT16) -> Point:
    return Point(name=name, addresses=addrs, kind=kind)


# ------------------------------------------------------------------ maps


def test_profiles_load() -> None:
    assert set(available_profiles()) == {"deye-sunsynk-1ph", "flow-transmitter"}
    with pytest.raises(KeyError):
        load_profile("nope")


def test_deye_map_facts() -> None:
    required = [
        "battery_soc_pct",
        "battery_power_w",
        "battery_voltage_v",
        "battery_current_a",
        "battery_temperature_c",
        "pv_power_w",
        "pv1_power_w",
        "pv2_power_w",
        "grid_power_w",
        "load_power_w",
        "inverter_power_w",
        "grid_voltage_v",
        "grid_frequency_hz",
        "battery_charge_energy_today_kwh",
        "battery_discharge_energy_today_kwh",
        "battery_charge_energy_total_kwh",
        "battery_discharge_energy_total_kwh",
        "grid_import_energy_today_kwh",
        "grid_import_energy_total_kwh",
        "grid_export_energy_today_kwh",
        "grid_export_energy_total_kwh",
        "load_energy_today_kwh",
        "load_energy_total_kwh",
        "pv_energy_today_kwh",
        "pv_energy_total_kwh",
        "fault_codes",
        "device_type",
        "serial_number",
        "rated_power_w",
        "work_mode",
        "tou_enabled",
        "grid_charge_enabled",
        "solar_sell_enabled",
        "battery_max_charge_current_a",
        "battery_max_discharge_current_a",
    ]
    for name in required:
        assert name in DEYE, name
    for n in range(1, 7):
        for f in ("start_hhmm", "power_w", "target_soc_pct", "grid_charge", "mode"):
            assert f"tou{n}_{f}" in DEYE
    assert DEYE["grid_import_energy_total_kwh"].addresses == (78, 80)
    assert DEYE["grid_import_energy_total_kwh"].word_order is WordOrder.LOW_FIRST
    assert DEYE["tou6_start_hhmm"].addresses == (255,)
    assert DEYE["tou3_target_soc_pct"].addresses == (270,)
    assert DEYE["battery_power_w"].signed
    assert DEYE["serial_number"].addresses == (3, 4, 5, 6, 7)
    assert DEYE["battery_soc_pct"].group is Group.FAST
    assert DEYE["pv_energy_total_kwh"].group is Group.SLOW
    assert DEYE["rated_power_w"].group is Group.IDENTITY
    assert all(p.min is not None and p.max is not None for p in DEYE.writable_points)


def test_maps_are_hashable_and_cached() -> None:
    assert len({*DEYE.points}) == len(DEYE.points)
    assert hash(DEYE) == hash(load_profile("deye-sunsynk-1ph"))
    assert load_profile("deye-sunsynk-1ph") is DEYE


def test_temperature_offset_and_signs() -> None:
    assert decode(DEYE, 182, [1253])["battery_temperature_c"] == pytest.approx(25.3)
    assert decode(DEYE, 190, [0xFFFF - 999])["battery_power_w"] == -1000
    assert decode(DEYE, 191, [0xFF38])["battery_current_a"] == pytest.approx(-2.0)


def test_low_word_first_and_split_pair() -> None:
    regs = {78: 0x0002, 79: 5000, 80: 0x0001}
    out = decode(DEYE, 0, regs)
    assert out["grid_import_energy_total_kwh"] == pytest.approx(((1 << 16) | 2) / 10)
    assert out["grid_frequency_hz"] == pytest.approx(50.0)


def test_derived_pv_total() -> None:
    out = decode(DEYE, 186, [1200, 300])
    assert out["pv_power_w"] == 1500
    assert "pv_power_w" not in decode(DEYE, 186, [1200])


def test_faults() -> None:
    p = DEYE["fault_codes"]
    words = encode_faults(p, ["F13", "F35", "F64"])
    assert words == [1 << 12, 0, 1 << 2, 1 << 15]
    assert decode_faults(DEYE, 103, words) == {"fault_codes": ["F13", "F35", "F64"]}
    assert decode_faults(DEYE, 103, [0, 0, 0, 0]) == {"fault_codes": []}
    with pytest.raises(EncodeError):
        encode_faults(p, ["F65"])
    flow = FLOW["status_flags"]
    assert decode_faults(FLOW, 10, encode_faults(flow, ["empty_pipe"])) == {"status_flags": ["empty_pipe"]}


def test_ascii() -> None:
    words = encode_text(DEYE["serial_number"], "2207123456")
    assert decode_text(DEYE, 3, words) == {"serial_number": "2207123456"}
    with pytest.raises(EncodeError):
        encode_text(DEYE["serial_number"], "x" * 11)


def test_masked_points_share_a_register() -> None:
    regs: dict[int, int] = {274: 0}
    store_value(DEYE["tou1_mode"], 3, regs)
    store_value(DEYE["tou1_grid_charge"], 1, regs)
    store_value(DEYE["tou1_sell"], 1, regs)
    assert regs[274] == 0x0C | 0x01 | 0x40
    out = decode(DEYE, 274, [regs[274]])
    assert (out["tou1_mode"], out["tou1_grid_charge"], out["tou1_sell"], out["tou1_gen_charge"]) == (
        3,
        1,
        1,
        0,
    )
    assert encode(DEYE["tou1_grid_charge"], 0, current=regs[274]) == [0x0C | 0x40]


def test_encode_range_checks() -> None:
    with pytest.raises(EncodeError):
        encode(DEYE["battery_max_discharge_current_a"], 186)
    with pytest.raises(EncodeError):
        encode(DEYE["work_mode"], 3)
    with pytest.raises(EncodeError):
        encode(DEYE["tou1_start_hhmm"], 1260)
    with pytest.raises(EncodeError):
        encode(DEYE["tou1_start_hhmm"], 2400)
    with pytest.raises(EncodeError):
        encode(DEYE["battery_power_w"], 40000)  # int16 overflow
    with pytest.raises(EncodeError):
        encode(DEYE["battery_soc_pct"], -1)
    with pytest.raises(EncodeError):
        encode(DEYE["tou1_target_soc_pct"], math.nan)
    assert encode(DEYE["tou1_start_hhmm"], 1430) == [1430]


def _sample(p: Point) -> float:
    if p.min is not None and p.max is not None:
        v = (p.min + p.max) / 2
        if p.kind is Kind.TIME:
            return 1230
        return round(v / p.scale) * p.scale if p.kind is not Kind.FLOAT32 else v
    return {
        Kind.INT16: -123 * p.scale,
        Kind.INT32: -70000 * p.scale,
        Kind.UINT32: 70000 * p.scale,
        Kind.FLOAT32: 12.5,
        Kind.TIME: 1230,
    }.get(p.kind, 42 * p.scale) + p.offset


@pytest.mark.parametrize(
    "rmap", [DEYE, FLOW, FLOW.with_word_order("low_first")], ids=["deye", "flow", "flow-lo"]
)
def test_round_trip_every_point(rmap: RegisterMap) -> None:
    for p in rmap.points:
        if p.kind in (Kind.DERIVED, Kind.ASCII, Kind.BITFIELD):
            continue
        v = _sample(p)
        words = encode(p, v)
        assert len(words) == len(p.addresses)
        assert all(0 <= w <= 0xFFFF for w in words)
        assert decode_point(p, words) == pytest.approx(v, abs=p.scale / 2), p.name
        regs = dict(zip(p.addresses, words, strict=True))
        assert decode(rmap, 0, regs)[p.name] == pytest.approx(v, abs=p.scale / 2)


def test_float_word_order() -> None:
    hi = FLOW["flow_rate_m3_per_h"]
    lo = FLOW.with_word_order("low_first")["flow_rate_m3_per_h"]
    w = encode(hi, 1.5)
    assert w == [0x3FC0, 0x0000]
    assert encode(lo, 1.5) == [0x0000, 0x3FC0]
    assert decode(FLOW, 0, w)["flow_rate_m3_per_h"] == 1.5


# ------------------------------------------------------------------ grouping


def _spans(blocks: list[Block]) -> list[tuple[int, int]]:
    return [(b.start, b.count) for b in blocks]


def test_group_exactly_125_and_126() -> None:
    assert _spans(group_blocks([_p("a", 0), _p("b", 124)], max_gap=200)) == [(0, 125)]
    assert _spans(group_blocks([_p("a", 0), _p("b", 125)], max_gap=200)) == [(0, 1), (125, 1)]


def test_group_gap_edges() -> None:
    assert _spans(group_blocks([_p("a", 10), _p("b", 15)], max_gap=4)) == [(10, 6)]  # gap 4 = max_gap
    assert _spans(group_blocks([_p("a", 10), _p("b", 16)], max_gap=4)) == [(10, 1), (16, 1)]  # gap 5
    assert _spans(group_blocks([_p("a", 10), _p("b", 11)], max_gap=0)) == [(10, 2)]
    assert _spans(group_blocks([_p("a", 10), _p("b", 12)], max_gap=0)) == [(10, 1), (12, 1)]


def test_group_32bit_point_not_cut() -> None:
    pts = [_p("a", 0), _p("wide", 124, 125, kind=Kind.UINT32)]
    blocks = group_blocks(pts, max_gap=200)
    assert _spans(blocks) == [(0, 1), (124, 2)]
    assert blocks[1].points == ("wide",)
    # a 32-bit point straddling the 125 boundary moves whole into the next block
    blocks = group_blocks([_p("a", 0), _p("mid", 60), Point("x", (123, 125), Kind.UINT32)], max_gap=200)
    assert _spans(blocks) == [(0, 61), (123, 3)]
    # the (78, 80) pair stays whole; 79 is read through
    blocks = group_blocks([DEYE["grid_import_energy_total_kwh"]], max_gap=0)
    assert _spans(blocks) == [(78, 3)]


def test_group_point_longer_than_block() -> None:
    with pytest.raises(ValueError):
        group_blocks([DEYE["grid_import_energy_total_kwh"]], max_registers=2)


def test_group_overlapping_and_unsorted() -> None:
    pts = [DEYE["tou1_mode"], DEYE["tou1_grid_charge"], DEYE["tou2_mode"], DEYE["battery_soc_pct"]]
    blocks = group_blocks(pts, max_gap=2)
    assert _spans(blocks) == [(184, 1), (274, 2)]
    assert set(blocks[1].points) == {"tou1_mode", "tou1_grid_charge", "tou2_mode"}


def test_group_whole_deye_map_and_decode() -> None:
    for gap in (0, 4, 16, 100):
        blocks = group_blocks(DEYE.points, max_gap=gap)
        covered = {n for b in blocks for n in b.points}
        assert covered == {p.name for p in DEYE.points if p.addresses}
        for b in blocks:
            assert 1 <= b.count <= 125
            assert DEYE.is_readable(b.start, b.count)
            for n in b.points:
                lo, hi = DEYE[n].span
                assert b.start <= lo and hi <= b.end


def test_group_rejects_bad_args() -> None:
    with pytest.raises(ValueError):
        group_blocks([], max_registers=126)
    with pytest.raises(ValueError):
        group_blocks([], max_gap=-1)
    assert group_blocks([]) == []
