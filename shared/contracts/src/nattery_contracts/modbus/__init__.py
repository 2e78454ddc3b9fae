"""Modbus register maps, decoding/encoding, block grouping and RTU line timing. Pure: no I/O.

Used by ``edge/inverter-sim`` (serves the registers) and ``edge/modbus-bridge`` (polls and writes
them). The register map is data, defined once, in ``maps/*.yaml`` inside this package.

Register maps (``registers.py``)
--------------------------------
``load_profile(name) -> RegisterMap``
    ``"deye-sunsynk-1ph"`` (``maps/deye_sunsynk_1ph.yaml``) or ``"flow-transmitter"``
    (``maps/flow_transmitter.yaml``). ``available_profiles()`` lists them.
``RegisterMap`` (frozen)
    ``profile, description, points, register_space, default_unit_id, default_baud,
    max_read_registers, max_write_registers``; ``rmap["battery_soc_pct"] -> Point``;
    ``rmap.in_group("fast")``, ``rmap.writable_points``, ``rmap.points_at(addr)``,
    ``rmap.is_readable(start, count)``, ``rmap.with_word_order("low_first"|"high_first")``.
``Point`` (frozen)
    ``name`` (Nattery name with unit), ``addresses`` (tuple, in word order of the encoding; may be
    non-adjacent, e.g. grid_import_energy_total_kwh = (78, 80)), ``kind`` (``Kind``: uint16, int16,
    uint32, int32, float32, ascii, bitfield, time = HHMM, derived = ``sum_of`` other points),
    ``scale``/``offset`` (value = raw * scale + offset; Deye temperature: 0.1, -100), ``word_order``
    (``WordOrder.LOW_FIRST`` for Deye 32-bit), ``mask`` (a field inside a shared register, e.g. TOU
    flags in 274-279), ``access`` (``Access.READ``/``READ_WRITE``; ``.writable``), ``group``
    (``Group.FAST`` power/SOC/faults every few s, ``SLOW`` counters ~1 min, ``IDENTITY`` at start-up,
    ``CONTROL`` writable settings), ``min``/``max`` (write range), ``enum``, ``codes``, ``signed``.
``group_blocks(points, max_registers=125, max_gap=8) -> list[Block]``
    Contiguous FC03 reads. ``Block(start, count, points)``; holes <= max_gap are read through, larger
    holes split, a block never exceeds max_registers, a point is never cut.
``decode(rmap, block_start, registers) -> dict[str, float]``
    Every numeric point wholly inside the block (plus derived sums such as ``pv_power_w``).
    ``registers`` is the list read from ``block_start`` or a mapping address -> word.
``decode_faults(rmap, block_start, registers) -> dict[str, list[str]]``
    Bitfield points -> active codes, e.g. ``{"fault_codes": ["F13"]}`` (bit n -> ``F{n+1:02}``).
``decode_text(...) -> dict[str, str]``  ASCII points (serial number).
``encode(point, value, *, current=None) -> list[int]``
    Words in ``point.addresses`` order, after the range check (``EncodeError``, a ``ValueError``).
    Masked points merge into ``current`` (read-modify-write; write the whole register).
``encode_faults(point, codes)``, ``encode_text(point, text)``, ``check_range(point, value)``,
``decode_point(point, words)``, ``bitfield_codes(point, words)``,
``store_value(point, value, registers: MutableMapping[int, int])`` (used by the simulator).

Line timing (``timing.py``)
---------------------------
``frame_time_s(n_bytes, baud, bits_per_char=10)``, ``t35_s(baud)`` (1.75 ms above 19200),
``t15_s(baud)``, ``transaction_time_s(req_bytes, resp_bytes, baud)``, ``read_response_size(n)``
(5 + 2N), ``write_request_size(n)`` (9 + 2N), ``READ_REQUEST_SIZE``, ``WRITE_RESPONSE_SIZE``,
``EXCEPTION_RESPONSE_SIZE``, ``bits_per_char(bytesize, parity, stopbits)``.

The frames themselves (PDUs, the RTU framer, CRC) are pymodbus' in the bridge and the simulator;
this package does not depend on it.

Example (bridge side, frames by pymodbus)::

    rmap = load_profile("deye-sunsynk-1ph")
    for blk in group_blocks(rmap.in_group("fast"), max_gap=16):
        registers = await master.read_holding(blk.start, blk.count)   # nattery_bridge.rtu
        values = decode(rmap, blk.start, registers)
    words = encode(rmap["battery_max_discharge_current_a"], 0)   # -> [0], write with FC16 at 211
"""

from nattery_contracts.modbus.registers import (
    DEFAULT_MAX_GAP,
    MAX_READ_REGISTERS,
    MAX_WRITE_REGISTERS,
    Access,
    Block,
    EncodeError,
    Group,
    Kind,
    Point,
    RegisterMap,
    RegisterMapError,
    WordOrder,
    available_profiles,
    bitfield_codes,
    check_range,
    decode,
    decode_faults,
    decode_point,
    decode_text,
    encode,
    encode_faults,
    encode_text,
    group_blocks,
    load_profile,
    parse_profile,
    store_value,
)
from nattery_contracts.modbus.timing import (
    EXCEPTION_RESPONSE_SIZE,
    READ_REQUEST_SIZE,
    WRITE_RESPONSE_SIZE,
    bits_per_char,
    frame_time_s,
    read_response_size,
    t15_s,
    t35_s,
    transaction_time_s,
    write_request_size,
)

__all__ = [
    "DEFAULT_MAX_GAP",
    "EXCEPTION_RESPONSE_SIZE",
    "MAX_READ_REGISTERS",
    "MAX_WRITE_REGISTERS",
    "READ_REQUEST_SIZE",
    "WRITE_RESPONSE_SIZE",
    "Access",
    "Block",
    "EncodeError",
    "Group",
    "Kind",
    "Point",
    "RegisterMap",
    "RegisterMapError",
    "WordOrder",
    "available_profiles",
    "bitfield_codes",
    "bits_per_char",
    "check_range",
    "decode",
    "decode_faults",
    "decode_point",
    "decode_text",
    "encode",
    "encode_faults",
    "encode_text",
    "frame_time_s",
    "group_blocks",
    "load_profile",
    "parse_profile",
    "read_response_size",
    "store_value",
    "t15_s",
    "t35_s",
    "transaction_time_s",
    "write_request_size",
]
