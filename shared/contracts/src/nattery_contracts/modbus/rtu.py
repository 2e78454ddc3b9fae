"""Modbus RTU framing: CRC-16/Modbus, FC03/FC06/FC16 frames, exceptions, wire timing (pure, no I/O)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
MAX_ADU = 256


class ExceptionCode(IntEnum):
    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B


class FrameError(ValueError):
    """A frame is malformed (bad length, unknown layout)."""


class CrcError(FrameError):
    """A frame's CRC does not match its contents."""


# ---------------------------------------------------------------- CRC-16/Modbus (poly 0xA001 reflected)


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus of ``data``; on the wire it goes low byte first (see :func:`with_crc`)."""
    crc = 0xFFFF
    for b in bytes(data):
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` + its CRC, low byte first."""
    return body + struct.pack("<H", crc16(body))


def check_crc(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == struct.unpack("<H", bytes(frame[-2:]))[0]


# ---------------------------------------------------------------- timing


def frame_time_s(n_bytes: int, baud: int, bits_per_char: int = 10) -> float:
    """Time ``n_bytes`` take on the wire (8N1 = 10 bits per character, 8E1/8N2 = 11)."""
    return n_bytes * bits_per_char / baud


def t35_s(baud: int, bits_per_char: int = 10) -> float:
    """Inter-frame silence t3.5: 3.5 character times, fixed at 1.75 ms above 19200 baud (spec)."""
    return 0.00175 if baud > 19200 else 3.5 * bits_per_char / baud


def t15_s(baud: int, bits_per_char: int = 10) -> float:
    """Maximum inter-character gap t1.5: 1.5 character times, fixed 0.75 ms above 19200 baud."""
    return 0.00075 if baud > 19200 else 1.5 * bits_per_char / baud


def transaction_time_s(request_bytes: int, response_bytes: int, baud: int, bits_per_char: int = 10) -> float:
    """Wire time of one transaction: both frames plus t3.5 after each (no device turnaround)."""
    return frame_time_s(request_bytes + response_bytes, baud, bits_per_char) + 2 * t35_s(baud, bits_per_char)


def read_response_size(count: int) -> int:
    """Bytes of an FC03/FC04 response carrying ``count`` registers (5 + 2N)."""
    return 5 + 2 * count


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Request:
    """A decoded request. ``count`` = registers read or written; ``values`` = words written."""

    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...] = ()


@dataclass(frozen=True)
class Response:
    """A decoded response: registers (FC03/04), address/count or value echo (FC06/16), or an exception."""

    unit: int
    function: int  # without the 0x80 exception bit
    registers: tuple[int, ...] = ()
    address: int | None = None
    count: int | None = None  # FC16: registers written; FC06: the value written
    exception: ExceptionCode | int | None = None

    @property
    def is_exception(self) -> bool:
        return self.exception is not None


def _check_unit(unit: int) -> None:
    if not 0 <= unit <= 247:
        raise ValueError(f"unit id {unit} outside 0..247")


def _check_words(values: Sequence[int]) -> None:
    for v in values:
        if not 0 <= v <= 0xFFFF:
            raise ValueError(f"register value {v} outside 0..65535")


def build_read_request(unit: int, address: int, count: int, function: int = READ_HOLDING) -> bytes:
    """FC03 (or FC04) request: 8 bytes."""
    _check_unit(unit)
    if not 1 <= count <= 125:
        raise ValueError(f"read count {count} outside 1..125")
    if not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"address {address}+{count} outside 0..65535")
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


def build_read_response(unit: int, registers: Sequence[int], function: int = READ_HOLDING) -> bytes:
    """FC03/FC04 response: unit, fc, byte count, data, CRC (5 + 2N bytes)."""
    _check_unit(unit)
    if not 1 <= len(registers) <= 125:
        raise ValueError("read response must carry 1..125 registers")
    _check_words(registers)
    return with_crc(struct.pack(f">BBB{len(registers)}H", unit, function, 2 * len(registers), *registers))


def build_write_single_request(unit: int, address: int, value: int) -> bytes:
    """FC06 request (the normal response is an identical echo)."""
    _check_unit(unit)
    _check_words([value])
    return with_crc(struct.pack(">BBHH", unit, WRITE_SINGLE, address, value))


build_write_single_response = build_write_single_request


def build_write_multiple_request(unit: int, address: int, values: Sequence[int]) -> bytes:
    """FC16 request: 9 + 2N bytes, 1..123 registers."""
    _check_unit(unit)
    if not 1 <= len(values) <= 123:
        raise ValueError(f"write count {len(values)} outside 1..123")
    _check_words(values)
    n = len(values)
    return with_crc(struct.pack(f">BBHHB{n}H", unit, WRITE_MULTIPLE, address, n, 2 * n, *values))


def build_write_multiple_response(unit: int, address: int, count: int) -> bytes:
    """FC16 response: 8 bytes echoing address and count."""
    _check_unit(unit)
    return with_crc(struct.pack(">BBHH", unit, WRITE_MULTIPLE, address, count))


def build_exception_response(unit: int, function: int, code: int) -> bytes:
    """Exception reply: unit, fc | 0x80, code, CRC (5 bytes)."""
    _check_unit(unit)
    return with_crc(struct.pack(">BBB", unit, (function & 0x7F) | 0x80, int(code)))


def parse_request(frame: bytes | bytearray) -> Request:
    """Decode a complete request frame (FC03/04/06/16; other codes give a bare Request). Checks CRC."""
    frame = bytes(frame)
    if len(frame) < 4:
        raise FrameError("frame too short")
    if not check_crc(frame):
        raise CrcError("bad CRC")
    unit, fc = frame[0], frame[1]
    body = frame[2:-2]
    if fc in (READ_HOLDING, READ_INPUT, WRITE_SINGLE):
        if len(body) != 4:
            raise FrameError(f"FC{fc:02} request body must be 4 bytes")
        address, n = struct.unpack(">HH", body)
        if fc == WRITE_SINGLE:
            return Request(unit, fc, address, 1, (n,))
        return Request(unit, fc, address, n)
    if fc == WRITE_MULTIPLE:
        if len(body) < 5:
            raise FrameError("FC16 request too short")
        address, n, bc = struct.unpack(">HHB", body[:5])
        if bc != 2 * n or len(body) != 5 + bc:
            raise FrameError("FC16 byte count mismatch")
        return Request(unit, fc, address, n, struct.unpack(f">{n}H", body[5:]))
    return Request(unit, fc, 0, 0)


def parse_response(frame: bytes | bytearray) -> Response:
    """Decode a complete response frame (checks CRC; exceptions give ``Response.exception``)."""
    frame = bytes(frame)
    if len(frame) < 5:
        raise FrameError("frame too short")
    if not check_crc(frame):
        raise CrcError("bad CRC")
    unit, fc = frame[0], frame[1]
    if fc & 0x80:
        code = frame[2]
        try:
            exc: ExceptionCode | int = ExceptionCode(code)
        except ValueError:
            exc = code
        return Response(unit, fc & 0x7F, exception=exc)
    if fc in (READ_HOLDING, READ_INPUT):
        bc = frame[2]
        if bc % 2 or len(frame) != 5 + bc:
            raise FrameError("byte count mismatch")
        return Response(unit, fc, registers=struct.unpack(f">{bc // 2}H", frame[3:-2]))
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
        if len(frame) != 8:
            raise FrameError("write response must be 8 bytes")
        address, n = struct.unpack(">HH", frame[2:6])
        return Response(unit, fc, address=address, count=n)
    raise FrameError(f"unsupported function code {fc:#04x}")


# ---------------------------------------------------------------- incremental framing


def expected_response_length(buf: bytes | bytearray) -> int | None:
    """Total length of the response frame starting at ``buf[0]``, or None if more bytes are needed.

    Raises :class:`FrameError` for a function code whose length cannot be known.
    """
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5
    if fc in (READ_HOLDING, READ_INPUT):
        return 5 + buf[2] if len(buf) >= 3 else None
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    raise FrameError(f"cannot frame response with function code {fc:#04x}")


def expected_request_length(buf: bytes | bytearray) -> int | None:
    """Total length of the request frame starting at ``buf[0]``, or None if more bytes are needed.

    Raises :class:`FrameError` for a function code whose length cannot be known (a server then
    falls back to the t3.5 silence to end the frame).
    """
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (READ_HOLDING, READ_INPUT, WRITE_SINGLE, 0x05):
        return 8
    if fc == WRITE_MULTIPLE:
        return 9 + buf[6] if len(buf) >= 7 else None
    raise FrameError(f"cannot frame request with function code {fc:#04x}")


class FrameAssembler:
    """Accumulates bytes from a serial port and says when a frame is complete.

    ``role="response"`` (a master reading replies) or ``"request"`` (a slave reading requests)::

        asm = FrameAssembler("response")
        while (frame := asm.feed(port.read(...))) is None: ...
        resp = parse_response(frame)       # raises CrcError on a damaged frame

    The frame length comes from the function code and byte count, so a reader can return as soon as
    the last byte arrives instead of waiting for a silence timeout. Bytes beyond a complete frame stay
    buffered (:attr:`pending`); call :meth:`reset` after a timeout or before a new request.
    """

    def __init__(self, role: str = "response") -> None:
        if role not in ("response", "request"):
            raise ValueError("role must be 'response' or 'request'")
        self._length = expected_response_length if role == "response" else expected_request_length
        self._buf = bytearray()

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def expected_length(self) -> int | None:
        """Length of the frame being assembled, if known yet (raises FrameError if it never will be)."""
        return self._length(self._buf)

    def feed(self, data: bytes | bytearray = b"") -> bytes | None:
        """Add ``data``; return the first complete frame (removed from the buffer) or None."""
        self._buf += data
        n = self._length(self._buf)
        if n is None or len(self._buf) < n:
            return None
        if n > MAX_ADU:
            self._buf.clear()
            raise FrameError(f"frame length {n} > {MAX_ADU}")
        frame = bytes(self._buf[:n])
        del self._buf[:n]
        return frame
