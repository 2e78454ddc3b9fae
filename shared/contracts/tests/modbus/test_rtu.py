from __future__ import annotations

import pytest

from nattery_contracts.modbus import (
    CrcError,
    ExceptionCode,
    FrameAssembler,
    FrameError,
    build_exception_response,
    build_read_request,
    build_read_response,
    build_write_multiple_request,
    build_write_multiple_response,
    build_write_single_request,
    check_crc,
    crc16,
    frame_time_s,
    parse_request,
    parse_response,
    t35_s,
    transaction_time_s,
)


@pytest.mark.parametrize(
    ("hexbody", "crc_wire"),
    [
        ("01030000000A", "C5CD"),  # the classic example
        ("010300000001", "840A"),
        ("110300", None),
    ],
)
def test_crc_known_vectors(hexbody: str, crc_wire: str | None) -> None:
    body = bytes.fromhex(hexbody)
    crc = crc16(body)
    if crc_wire:
        assert crc.to_bytes(2, "little").hex().upper() == crc_wire
    assert check_crc(body + crc.to_bytes(2, "little"))


def test_crc_check_value() -> None:
    # CRC-16/MODBUS catalogue check value for "123456789"
    assert crc16(b"123456789") == 0x4B37


def test_read_request_frame() -> None:
    assert build_read_request(1, 0, 10) == bytes.fromhex("01030000000AC5CD")
    req = parse_request(build_read_request(7, 184, 8))
    assert (req.unit, req.function, req.address, req.count) == (7, 3, 184, 8)


def test_read_response_round_trip() -> None:
    frame = build_read_response(1, [1, 2, 0xFFFF])
    assert len(frame) == 5 + 6
    resp = parse_response(frame)
    assert resp.registers == (1, 2, 0xFFFF)
    assert not resp.is_exception


def test_write_frames() -> None:
    f6 = build_write_single_request(1, 211, 0)
    r = parse_request(f6)
    assert (r.function, r.address, r.values) == (6, 211, (0,))
    assert parse_response(f6).count == 0
    f16 = build_write_multiple_request(1, 250, [100, 200])
    assert len(f16) == 9 + 4
    r = parse_request(f16)
    assert (r.function, r.address, r.count, r.values) == (16, 250, 2, (100, 200))
    resp = parse_response(build_write_multiple_response(1, 250, 2))
    assert (resp.address, resp.count) == (250, 2)


def test_exception_frame() -> None:
    frame = build_exception_response(1, 3, ExceptionCode.ILLEGAL_DATA_ADDRESS)
    assert frame[:3] == bytes([1, 0x83, 2]) and len(frame) == 5
    resp = parse_response(frame)
    assert resp.exception is ExceptionCode.ILLEGAL_DATA_ADDRESS and resp.function == 3


def test_bad_crc_raises() -> None:
    frame = bytearray(build_read_response(1, [5]))
    frame[-1] ^= 0xFF
    with pytest.raises(CrcError):
        parse_response(frame)


def test_limits() -> None:
    with pytest.raises(ValueError):
        build_read_request(1, 0, 126)
    with pytest.raises(ValueError):
        build_write_multiple_request(1, 0, [0] * 124)
    assert len(build_read_response(1, [0] * 125)) == 255
    assert len(build_write_multiple_request(1, 0, [0] * 123)) == 255


def test_assembler_response_byte_by_byte() -> None:
    frame = build_read_response(1, list(range(60)))
    asm = FrameAssembler("response")
    for i, b in enumerate(frame):
        out = asm.feed(bytes([b]))
        if i < len(frame) - 1:
            assert out is None
    assert out == frame


def test_assembler_chunks_and_leftover() -> None:
    a = build_exception_response(1, 3, 2)
    b = build_write_multiple_response(1, 250, 2)
    asm = FrameAssembler("response")
    assert asm.feed(a[:3]) is None
    assert asm.feed(a[3:] + b[:4]) == a
    assert asm.pending == b[:4]
    assert asm.feed(b[4:]) == b
    assert asm.feed() is None


def test_assembler_requests() -> None:
    req = build_write_multiple_request(1, 250, [1, 2, 3])
    asm = FrameAssembler("request")
    assert asm.feed(req[:6]) is None
    assert asm.feed(req[6:]) == req
    assert asm.feed(build_read_request(1, 0, 1)) is not None


def test_assembler_unknown_function() -> None:
    asm = FrameAssembler("response")
    with pytest.raises(FrameError):
        asm.feed(bytes([1, 0x2B, 0]))


def test_timing() -> None:
    assert frame_time_s(8, 9600) == pytest.approx(8 * 10 / 9600)
    assert t35_s(9600) == pytest.approx(0.0036458, rel=1e-3)
    assert t35_s(38400) == 0.00175
    assert t35_s(19200) == pytest.approx(3.5 * 10 / 19200)
    # reference table: FC03 60 registers at 9600 8N1 = 145.8 ms incl. 2 x t3.5
    assert transaction_time_s(8, 5 + 120, 9600) == pytest.approx(0.1458, abs=5e-4)
    assert transaction_time_s(8, 7, 9600) == pytest.approx(0.0229, abs=5e-4)
