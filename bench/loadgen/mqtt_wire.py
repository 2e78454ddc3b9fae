"""Just enough MQTT 3.1.1 on raw asyncio streams to publish and count at high rates.

paho spends tens of microseconds of Python per message; a load generator sharing two cores with the
system under test must not. Packets are built as bytes and written in batches; PUBACKs are parsed
in bulk to keep a bounded number in flight.
"""

from __future__ import annotations

import asyncio
import struct


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str, username: str, password: str, *, keepalive: int = 60, clean: bool = True
) -> bytes:
    flags = 0x80 | 0x40 | (0x02 if clean else 0)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body += _string(client_id) + _string(username) + _string(password)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """QoS 1 PUBLISH."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join(
        (
            b"\x32",
            _remaining_length(body_len),
            struct.pack("!H", len(topic)),
            topic,
            struct.pack("!H", packet_id),
            payload,
        )
    )


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos])
    return bytes([0x82]) + _remaining_length(len(body)) + body


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = (await reader.readexactly(1))[0]
    multiplier, length = 1, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    return header, await reader.readexactly(length) if length else b""


async def open_connection(
    host: str, port: int, client_id: str, username: str, password: str, *, clean: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=2**22)
    writer.write(connect_packet(client_id, username, password, clean=clean))
    await writer.drain()
    header, body = await read_packet(reader)
    if header >> 4 != 2 or body[1] != 0:
        raise ConnectionError(f"CONNACK refused: {body!r}")
    return reader, writer
