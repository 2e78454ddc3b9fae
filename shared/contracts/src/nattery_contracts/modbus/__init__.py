"""Modbus register maps, decoding/encoding, block grouping and RTU framing. Pure: no I/O.

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

RTU framing (``rtu.py``)
------------------------
``crc16(data) -> int`` (CRC-16/Modbus, table-driven; low byte first on the wire), ``with_crc``,
``check_crc``. Builders: ``build_read_request(unit, address, count)`` (FC03),
``build_read_response``, ``build_write_single_request`` / ``_response`` (FC06, echo),
``build_write_multiple_request(unit, address, values)`` (FC16, 1..123 words),
``build_write_multiple_response``, ``build_exception_response(unit, function, code)``.
Parsers: ``parse_request(frame) -> Request``, ``parse_response(frame) -> Response`` (raise
``CrcError``/``FrameError``; ``Response.exception`` is an ``ExceptionCode`` for exception replies).
Incremental: ``FrameAssembler("response"|"request").feed(bytes) -> bytes | None`` returns a frame as
soon as its last byte arrives (length from function code and byte count), or use
``expected_response_length(buf)`` / ``expected_request_length(buf)`` directly.
Timing: ``frame_time_s(n_bytes, baud, bits_per_char=10)``, ``t35_s(baud)`` (1.75 ms above 19200),
``t15_s(baud)``, ``transaction_time_s(req_bytes, resp_bytes, baud)``, ``read_response_size(n)``.

Example (bridge side)::

    rmap = load_profile("deye-sunsynk-1ph")
    for blk in group_blocks(rmap.in_group("fast"), max_gap=16):
        port.write(build_read_request(1, blk.start, blk.count))
        asm = FrameAssembler("response")
        while (frame := asm.feed(port.read(64))) is None: ...
        values = decode(rmap, blk.start, parse_response(frame).registers)
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
from nattery_contracts.modbus.rtu import (
    READ_HOLDING,
    READ_INPUT,
    WRITE_MULTIPLE,
    WRITE_SINGLE,
    CrcError,
    ExceptionCode,
    FrameAssembler,
    FrameError,
    Request,
    Response,
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_multiple_response,
    build_write_single_request,
    build_write_single_response,
    check_crc,
    crc16,
    expected_request_length,
    expected_response_length,
    frame_time_s,
    parse_request,
    parse_response,
    read_response_size,
    t15_s,
    t35_s,
    transaction_time_s,
    with_crc,
)

__all__ = [
    "DEFAULT_MAX_GAP",
    "MAX_READ_REGISTERS",
    "MAX_WRITE_REGISTERS",
    "READ_HOLDING",
    "READ_INPUT",
    "WRITE_MULTIPLE",
    "WRITE_SINGLE",
    "Access",
    "Block",
    "CrcError",
    "EncodeError",
    "ExceptionCode",
    "FrameAssembler",
    "FrameError",
    "Group",
    "Kind",
    "Point",
    "RegisterMap",
    "RegisterMapError",
    "Request",
    "Response",
    "WordOrder",
    "available_profiles",
    "bitfield_codes",
    "build_exception_response",
    "build_read_request",
    "build_read_response",
    "build_write_multiple_request",
    "build_write_multiple_response",
    "build_write_single_request",
    "build_write_single_response",
    "check_crc",
    "check_range",
    "crc16",
    "decode",
    "decode_faults",
    "decode_point",
    "decode_text",
    "encode",
    "encode_faults",
    "encode_text",
    "expected_request_length",
    "expected_response_length",
    "frame_time_s",
    "group_blocks",
    "load_profile",
    "parse_profile",
    "parse_request",
    "parse_response",
    "read_response_size",
    "store_value",
    "t15_s",
    "t35_s",
    "transaction_time_s",
    "with_crc",
]
