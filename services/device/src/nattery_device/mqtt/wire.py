"""MQTT 5 packets for the ingest subscriber: pure functions, no I/O (MQTT 5.0 spec, section 3).

Only what a QoS 1 subscriber needs: CONNECT (session expiry, receive maximum), CONNACK, SUBSCRIBE,
SUBACK, PUBLISH (decoded in bulk from a buffer), PUBACK, PINGREQ/PINGRESP, DISCONNECT.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

CONNACK, PUBLISH, SUBACK, PINGRESP, DISCONNECT = 2, 3, 9, 13, 14
PINGREQ = b"\xc0\x00"
DISCONNECT_NORMAL = b"\xe0\x00"


class ProtocolError(Exception):
    pass


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
) -> bytes:
    flags = (0x80 if username else 0) | (0x40 if password is not None else 0) | (0x02 if clean_start else 0)
    props = b"\x11" + struct.pack("!I", session_expiry_s) + b"\x21" + struct.pack("!H", receive_maximum)
    body = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s) + varint(len(props)) + props
    body += _str(client_id)
    if username:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return b"\x10" + varint(len(body)) + body


def subscribe(packet_id: int, filters: Sequence[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00" + b"".join(_str(f) + bytes([qos]) for f in filters)
    return b"\x82" + varint(len(body)) + body


def pubacks(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs in their short form (reason Success, no properties: MQTT 5 §3.4.2.1)."""
    return b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in packet_ids)


def _read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise IndexError
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("malformed remaining length")


Packet = tuple[int, int, bytes]  # packet type, fixed-header flags, body


def split(buf: bytearray, limit: int | None = None) -> tuple[list[Packet], int]:
    """Complete packets (at most ``limit``) at the start of ``buf`` and how many bytes they used."""
    packets: list[Packet] = []
    pos, size = 0, len(buf)
    while pos + 2 <= size and (limit is None or len(packets) < limit):
        header = buf[pos]
        try:
            length, body_start = _read_varint(buf, pos + 1)
        except IndexError:
            break
        end = body_start + length
        if end > size:
            break
        packets.append((header >> 4, header & 0x0F, bytes(buf[body_start:end])))
        pos = end
    return packets, pos


Publish = tuple[str, int, bytes]  # topic, packet id (0 for QoS 0), payload


def split_publishes(buf: bytearray) -> tuple[list[Publish], list[Packet], int]:
    """Like :func:`split`, decoding PUBLISH packets on the way (the ingest hot path, one pass and one
    copy of the buffer instead of three per message): (publishes, other packets, bytes used)."""
    data = bytes(buf)
    publishes: list[Publish] = []
    others: list[Packet] = []
    append = publishes.append
    pos, size = 0, len(data)
    while pos + 2 <= size:
        header = data[pos]
        length = data[pos + 1]
        if length < 0x80:
            start = pos + 2
        else:
            try:
                length, start = _read_varint(data, pos + 1)
            except IndexError:
                break
        end = start + length
        if end > size:
            break
        if header >> 4 == PUBLISH:
            at = start + 2 + ((data[start] << 8) | data[start + 1])
            topic = data[start + 2 : at].decode()
            mid = 0
            if header & 0x06:
                mid = (data[at] << 8) | data[at + 1]
                at += 2
            props = data[at]
            if props < 0x80:
                at += 1 + props
            else:
                props, at = _read_varint(data, at)
                at += props
            append((topic, mid, data[at:end]))
        else:
            others.append((header >> 4, header & 0x0F, data[start:end]))
        pos = end
    return publishes, others, pos


def decode_publish(flags: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0 for QoS 0, payload) of an MQTT 5 PUBLISH."""
    topic_len = int.from_bytes(body[0:2], "big")
    pos = 2 + topic_len
    topic = body[2:pos].decode()
    mid = 0
    if flags & 0x06:
        mid = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
    props_len, pos = _read_varint(body, pos)
    return topic, mid, body[pos + props_len :]


def decode_connack(body: bytes) -> tuple[bool, int]:
    """(session present, reason code)."""
    return bool(body[0] & 0x01), body[1]
