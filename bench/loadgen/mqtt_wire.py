"""The load generator's MQTT: the kit's MQTT 5 codec (:mod:`nattery_shared.mqtt5.wire`) on raw asyncio
streams, no codec of its own (there was a second hand-written one, for MQTT 3.1.1, until issue 10).

paho spends tens of microseconds of Python per message (``bench/mqtt_ack.py`` measures it); a load
generator sharing two cores with the system under test must not. Packets are built as bytes and written
in batches; PUBACKs are parsed in bulk to keep a bounded number in flight. Only the adapters the
benchmarks call live here: :func:`open_connection`, :func:`publish_packet`, :func:`read_packet`.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

from pydantic import SecretStr

from nattery_shared.mqtt5 import wire
from nattery_shared.mqtt5.client import open_connection as _open_connection
from nattery_shared.settings import MqttSettings

__all__ = ["PacketReader", "open_connection", "packet_reader", "publish_packet", "read_packet"]

publish_packet = wire.publish  # (topic bytes, payload, packet id) -> a QoS 1 PUBLISH


class PacketReader:
    """Whole packets from a stream, decoded in bulk from each read."""

    def __init__(self, reader: asyncio.StreamReader, pending: bytearray | None = None) -> None:
        self._reader = reader
        self._buf = pending if pending is not None else bytearray()
        self._ready: collections.deque[wire.Packet] = collections.deque()

    async def next_packets(self) -> list[wire.Packet]:
        """At least one packet (type, flags, body); EOFError when the broker closed the connection."""
        if self._ready:
            out = list(self._ready)
            self._ready.clear()
            return out
        while True:
            packets, used = wire.split(self._buf)
            if packets:
                del self._buf[:used]
                return packets
            chunk = await self._reader.read(1 << 20)
            if not chunk:
                raise EOFError("broker closed the connection")
            self._buf += chunk

    async def next_packet(self) -> wire.Packet:
        if not self._ready:
            self._ready.extend(await self.next_packets())
        return self._ready.popleft()


# The PacketReader of each connection opened here (bytes read past the CONNACK start its buffer).
_readers: weakref.WeakKeyDictionary[asyncio.StreamReader, PacketReader] = weakref.WeakKeyDictionary()


def packet_reader(reader: asyncio.StreamReader) -> PacketReader:
    found = _readers.get(reader)
    if found is None:
        found = _readers[reader] = PacketReader(reader)
    return found


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One packet as (first header byte, body); :meth:`PacketReader.next_packets` for many at once."""
    kind, flags, body = await packet_reader(reader).next_packet()
    return kind << 4 | flags, body


async def open_connection(
    host: str, port: int, client_id: str, username: str, password: str, *, clean: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An MQTT 5 connection, CONNACK received (ConnectRefused when the broker says no)."""
    settings = MqttSettings(host=host, port=port, username=username, password=SecretStr(password))
    reader, writer, pending = await _open_connection(settings, client_id, clean_start=clean)
    _readers[reader] = PacketReader(reader, pending)
    return reader, writer
