"""QoS 1 with the acknowledgement after a (simulated) durable store: the kit's MQTT 5 client against
paho-mqtt 2.x ``manual_ack``, directly (its network thread) and through aiomqtt.

Issue 10: "If paho-mqtt's manual acknowledgement (through aiomqtt or directly) can do the same at the
same speed, measure it and prefer it." Each client drains the same backlog: ``--messages`` QoS 1
messages (``--payload`` bytes, about one 25-field telemetry sample) queued by Mosquitto for an offline
persistent session, delivered with Receive Maximum ``--receive-maximum``; the consumer takes what has
arrived (at most 500), awaits the "store" (one event-loop turn: the store itself costs every client
the same, so it is left out) and then acknowledges that batch. Only the subscriber runs while it is
timed, so its CPU is the client's: process CPU time (every thread) per message. Mosquitto's CPU over
the same time is printed beside it.

    uv run python bench/mqtt_ack.py                    # 50,000 messages, best of 3 per client
    uv run python bench/mqtt_ack.py --messages 5000 --repeats 1 --clients kit paho

Needs the local Mosquitto (``bash infrastructure/local/setup.sh``) on 127.0.0.1:1884.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, note, proc_cpu_s

from nattery_shared.mqtt5 import wire
from nattery_shared.mqtt5.client import (
    AckingSubscriber,
    forget_session_async,
    open_connection,
)
from nattery_shared.settings import MqttSettings

BENCH = "mqtt-ack"
USER, PASSWORD = "device-service", "nattery-dev"  # the ACL lets it read and write nattery/v1/#
SESSION_EXPIRY_S = 600
BATCH = 500


def settings(port: int) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, username=USER, password=SecretStr(PASSWORD))


def broker_pid(port: int) -> int | None:
    """The process listening on ``port`` (the broker need not be this checkout's: read ``ss``)."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


async def store(batch_size: int) -> None:
    """The durable store, simulated: one turn of the event loop (a real one awaits a write)."""
    await asyncio.sleep(0)


# --- the backlog ----------------------------------------------------------------------------------
async def make_session(port: int, client_id: str, topic: str, receive_maximum: int) -> None:
    """Create the persistent session and its subscription, then go offline (the broker queues)."""
    reader, writer, buf = await open_connection(
        settings(port),
        client_id,
        clean_start=True,
        session_expiry_s=SESSION_EXPIRY_S,
        receive_maximum=receive_maximum,
    )
    try:
        writer.write(wire.subscribe(1, [topic]))
        await writer.drain()
        while True:
            packets, used = wire.split(buf)
            del buf[:used]
            if any(kind == wire.SUBACK for kind, _, _ in packets):
                break
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection before SUBACK")
            buf += chunk
        writer.write(wire.DISCONNECT_NORMAL)
        await writer.drain()
    finally:
        writer.close()


async def publish_backlog(port: int, topic: str, messages: int, payload_size: int) -> None:
    """``messages`` QoS 1 PUBLISHes, at most 1000 unacknowledged, until the broker acked them all."""
    reader, writer, buf = await open_connection(settings(port), f"bench-ack-pub-{uuid.uuid4().hex[:8]}")
    topic_b = topic.encode()
    body = b'{"ts":"2026-01-01T00:00:00+00:00","seq":%d,"values":{' + b"x" * payload_size + b"}}"
    sent = acked = 0
    try:
        while acked < messages:
            window = min(messages - sent, 1000 - (sent - acked))
            if window > 0:
                writer.write(
                    b"".join(
                        wire.publish(topic_b, (body % (sent + i))[:payload_size], (sent + i) % 65535 + 1)
                        for i in range(window)
                    )
                )
                sent += window
                await writer.drain()
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise ConnectionError("broker closed the publisher's connection")
            buf += chunk
            packets, used = wire.split(buf)
            del buf[:used]
            acked += sum(kind == wire.PUBACK for kind, _, _ in packets)
        writer.write(wire.DISCONNECT_NORMAL)
        await writer.drain()
    finally:
        writer.close()


# --- the clients under test -------------------------------------------------------------------------
async def drain_kit(port: int, client_id: str, topic: str, messages: int, receive_maximum: int) -> int:
    sub = AckingSubscriber(
        settings(port),
        client_id=client_id,
        filters=[topic],
        receive_maximum=receive_maximum,
        session_expiry_s=SESSION_EXPIRY_S,
        name="bench-kit",
    )
    sub.start()
    acked = 0
    try:
        while acked < messages:
            batch = await sub.next_batch(BATCH)
            await store(len(batch))
            acked += sub.ack(batch)
    finally:
        await sub.close()
    return acked


def _paho_properties(receive_maximum: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = receive_maximum
    return props


async def drain_paho(port: int, client_id: str, topic: str, messages: int, receive_maximum: int) -> int:
    """paho-mqtt on its own network thread (``loop_start``), ``manual_ack=True``; the asyncio side is
    woken only when it waits (one ``call_soon_threadsafe`` per wake-up, not per message)."""
    loop = asyncio.get_running_loop()
    arrived: collections.deque[int] = collections.deque()
    wake = asyncio.Event()
    waiting = threading.Event()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        arrived.append(msg.mid)
        if waiting.is_set():
            waiting.clear()
            loop.call_soon_threadsafe(wake.set)

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
    )
    client.username_pw_set(USER, PASSWORD)
    client.on_message = on_message
    client.connect(
        "127.0.0.1", port, keepalive=30, clean_start=False, properties=_paho_properties(receive_maximum)
    )
    client.loop_start()
    acked = 0
    try:
        while acked < messages:
            while not arrived:
                wake.clear()
                waiting.set()
                if arrived:  # arrived between the check and the flag
                    waiting.clear()
                    break
                await wake.wait()
            batch = [arrived.popleft() for _ in range(min(BATCH, len(arrived)))]
            await store(len(batch))
            for mid in batch:
                client.ack(mid, 1)
            acked += len(batch)
    finally:
        client.disconnect()
        client.loop_stop()
    return acked


async def drain_aiomqtt(port: int, client_id: str, topic: str, messages: int, receive_maximum: int) -> int:
    """aiomqtt 2.5 (paho on the asyncio loop); aiomqtt has no manual-ack option of its own, so the
    paho client underneath (``client._client``) is switched to ``manual_ack`` and acks through it."""
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        username=USER,
        password=PASSWORD,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=_paho_properties(receive_maximum),
    )
    client._client.manual_ack_set(True)
    acked = 0
    async with client:
        pending: list[int] = []
        async for msg in client.messages:
            pending.append(msg.mid)
            if len(client.messages) == 0 or len(pending) >= BATCH:
                await store(len(pending))
                for mid in pending:
                    client._client.ack(mid, 1)
                acked += len(pending)
                pending = []
                if acked >= messages:
                    break
    return acked


Drain = Callable[[int, str, str, int, int], Awaitable[int]]
CLIENTS: dict[str, Drain] = {"kit": drain_kit, "paho": drain_paho, "aiomqtt": drain_aiomqtt}


async def one_run(name: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """(messages per second, subscriber CPU us per message, broker CPU us per message)."""
    client_id = f"bench-ack-{name}-{uuid.uuid4().hex[:8]}"
    topic = f"nattery/v1/kitbench-{uuid.uuid4().hex[:8]}/ack"  # four levels: no service subscribes to it
    await make_session(args.port, client_id, topic, args.receive_maximum)
    try:
        await publish_backlog(args.port, topic, args.messages, args.payload)
        pid = broker_pid(args.port)
        broker_cpu0 = proc_cpu_s(pid) if pid else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        acked = await asyncio.wait_for(
            CLIENTS[name](args.port, client_id, topic, args.messages, args.receive_maximum), 300
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        broker_cpu = (proc_cpu_s(pid) - broker_cpu0) if pid else float("nan")
        if acked < args.messages:
            raise RuntimeError(f"{name}: acknowledged {acked} of {args.messages}")
    finally:
        await forget_session_async(settings(args.port), client_id)
    n = args.messages
    return n / wall, cpu / n * 1e6, broker_cpu / n * 1e6


async def main_async(args: argparse.Namespace) -> None:
    for name in args.clients:
        runs = []
        for i in range(args.repeats):
            runs.append(await one_run(name, args))
            note(BENCH, f"{name} run {i + 1}: {runs[-1][0]:,.0f} msg/s, {runs[-1][1]:.1f} us CPU/msg")
        best = max(runs)  # best throughput of the repeats, and that run's CPU
        common = {
            "client": name,
            "messages": args.messages,
            "payload_bytes": args.payload,
            "receive_maximum": args.receive_maximum,
            "repeats": args.repeats,
            "runs_msgs_per_s": [round(r[0]) for r in runs],
            "runs_cpu_us_per_msg": [round(r[1], 1) for r in runs],
            "broker_cpu_us_per_msg": round(best[2], 1),
            "python": sys.version.split()[0],
            "paho_mqtt": version("paho-mqtt"),
            "aiomqtt": version("aiomqtt"),
            "cores": os.cpu_count(),
        }
        reference = (
            "the same backlog drained by the kit client, paho-mqtt 2.x manual_ack (own thread) and "
            "aiomqtt over paho manual_ack on this machine; the ack follows a simulated store"
        )
        emit(
            f"mqtt_ack.{name}_backlog_drain_msgs_per_s",
            round(best[0]),
            "msg/s",
            reference=reference,
            **common,
        )
        emit(f"mqtt_ack.{name}_cpu_us_per_msg", round(best[1], 1), "us/msg", reference=reference, **common)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--payload", type=int, default=700, help="bytes per message (a 25-field sample)")
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", nargs="+", choices=sorted(CLIENTS), default=["kit", "paho", "aiomqtt"])
    parser.add_argument("--port", type=int, default=1884)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
