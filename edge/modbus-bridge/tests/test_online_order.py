"""The bridge says "online" only once it is subscribed to its commands.

device-service publishes a device's open commands again as soon as the device says it is online. A
command the broker receives before the bridge's subscription exists has no subscriber (and commands
are not retained), so it is dropped: the bridge must have its SUBACK before it publishes "online".

The race is made deterministic by a proxy that reads the bridge's MQTT packets: once the bridge's
"online" PUBLISH has gone up, everything the broker sends back is held until the cloud's command has
been accepted by the broker (its PUBACK). With the old order (publish "online", then subscribe) the
SUBSCRIBE could only leave after that, so the command was already dropped and never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from bridge_harness import MQTT_HOST, MQTT_PORT, BridgeProcess, bridge_env, cloud, free_port

pytestmark = pytest.mark.usefixtures("site_user")

PUBLISH, SUBSCRIBE = 3, 8


def _packets(buf: bytearray) -> list[bytes]:
    """Take the complete MQTT control packets off the front of ``buf``."""
    out: list[bytes] = []
    while len(buf) >= 2:
        length, multiplier, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return out
            byte = buf[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            return out
        out.append(bytes(buf[: i + length]))
        del buf[: i + length]
    return out


def _publish_topic(packet: bytes) -> str | None:
    if packet[0] >> 4 != PUBLISH:
        return None
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    n = int.from_bytes(packet[i : i + 2], "big")
    return packet[i + 2 : i + 2 + n].decode()


class HoldAfterOnline:
    """A proxy in front of the broker that records the bridge's packets and, once the bridge has
    published ``state_topic``, holds the broker's packets to the bridge until ``release()``."""

    def __init__(self, state_topic: str) -> None:
        self.state_topic = state_topic
        self.port = free_port()
        self.sent: list[tuple[int, str | None]] = []  # (packet type, PUBLISH topic) bridge -> broker
        self.online_sent = asyncio.Event()
        self.released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldAfterOnline:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        self.released.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            ur, uw = await asyncio.open_connection(MQTT_HOST, MQTT_PORT)
            await asyncio.gather(self._up(reader, uw), self._down(ur, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)

    async def _up(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            while data := await r.read(65536):
                buf += data
                for packet in _packets(buf):
                    topic = _publish_topic(packet)
                    self.sent.append((packet[0] >> 4, topic))
                    if topic == self.state_topic and not self.online_sent.is_set():
                        self.online_sent.set()
                    w.write(packet)
                await w.drain()
        finally:
            w.close()

    async def _down(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                if self.online_sent.is_set():
                    await self.released.wait()
                w.write(data)
                await w.drain()
        finally:
            w.close()


async def test_subscribed_before_online_so_a_command_sent_on_online_arrives(
    rig_factory: Any, tmp_path: Path
) -> None:
    rig = rig_factory("--time-factor", "60")
    device = f"t-{uuid.uuid4().hex[:10]}"
    async with cloud(device) as c:
        state_topic = f"{c.prefix}/state"
        async with HoldAfterOnline(state_topic) as proxy:
            b = BridgeProcess(tmp_path, bridge_env(tmp_path, device, rig.bridge_port, proxy.port)).start()
            try:
                # The cloud sees "online" (the broker got it; the bridge waits for its PUBACK, held)...
                state = await c.wait_for(lambda: c.of("state"), 15, "online")
                assert state[-1]["status"] == "online"
                assert proxy.online_sent.is_set()
                # ...and sends a command at once, as device-service redelivers open commands on online.
                cid = await c.command("set_mode", {"mode": "hold"})  # returns after the broker's PUBACK
                proxy.release()
                ack = await c.ack(cid, ("accepted", "done", "rejected"), within=15)
                assert ack["id"] == cid
                kinds = [kind for kind, _ in proxy.sent]
                online_at = proxy.sent.index((PUBLISH, state_topic))
                assert SUBSCRIBE in kinds[:online_at], proxy.sent  # subscribed before saying online
            finally:
                rc = b.stop()
                if rc not in (0, -15, None):
                    print(b.log_text()[-4000:])
