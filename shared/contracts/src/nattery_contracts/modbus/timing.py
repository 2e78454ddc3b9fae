"""Modbus RTU line timing: how long frames and silences take on a serial line (pure arithmetic).

The frames themselves are pymodbus' (``FramerRTU`` and its PDU classes) in the bridge and the
simulator; this package stays free of it (pydantic and pyyaml only). The bridge sizes its timeouts and
pacing with these figures, the simulator emulates the wire with them, and ``bench/bridge.py`` computes
the line's limits from them.
"""

from __future__ import annotations

# Frame sizes (bytes on the wire, address and CRC included)
READ_REQUEST_SIZE = 8  # FC03/FC04: unit, fc, address, count, CRC
WRITE_RESPONSE_SIZE = 8  # FC06/FC16: unit, fc, address, count (or value), CRC
EXCEPTION_RESPONSE_SIZE = 5  # unit, fc | 0x80, code, CRC


def read_response_size(count: int) -> int:
    """Bytes of an FC03/FC04 response carrying ``count`` registers (5 + 2N)."""
    return 5 + 2 * count


def write_request_size(count: int) -> int:
    """Bytes of an FC16 request writing ``count`` registers (9 + 2N)."""
    return 9 + 2 * count


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


def bits_per_char(bytesize: int, parity: str, stopbits: int) -> int:
    """Bits per character on the line: start bit + data + parity (unless ``"N"``) + stop bits."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits
