"""Benchmark of device-service's offline alerts (``make bench-alerts``): one JSON line.

* ``device.offline_alert_p99_s``: for N devices (default 10,000), the time from (a device's last message
  + its offline rule's window) until ``alert.raised`` for it arrives on RabbitMQ. Nearest-rank p99
  (``bench/common.py``); an alert that has not arrived by the deadline counts as infinitely late.

Everything is real: device-service as a subprocess (``python -m nattery_device``), the project Mosquitto
(1884), PostgreSQL (``nattery_test``), Redis, RabbitMQ (``nattery_test`` vhost) and InfluxDB (database
``nattery_bench_alerts``, dropped afterwards). The bench sites and devices go straight into device's
tables (as in ``bench/ingest.py``); the org's offline rule (``--window-s``, default 20 s) is created through
the REST API (``POST /alert-rules``, which also seeds the org's defaults), and the default 15-minute
offline rule is disabled through the API (``PUT``) so it cannot raise anything. Every device then sends
one 25-field telemetry message over MQTT (the load generator's payload, the service account), spread
evenly over ``--spread-s`` (default 10 s: devices going quiet at different times, as a fleet does;
``--spread-s 0`` is the whole fleet going quiet at once). The spread must stay well inside the window: a
device with no message yet is silent since the rule's creation, and the check rightly raises "never sent"
for it once the window has passed (those are counted apart, as missing, and say the bench was wrong).
Beside the figure, its two parts: due -> the alert's ``at`` (the check raising it in PostgreSQL) and
``at`` -> received (outbox relay + RabbitMQ). ``alert.raised`` events are collected by an
exclusive, auto-deleted queue of the bench's own bound to ``nattery.events``, and each is matched to its
device's message timestamp (the sample's ``ts``, which is what presence stores as last seen).

The offline check is the service's periodic ``RetryLoop`` over PostgreSQL and Redis (its interval is
read from ``AlertEvaluator``'s signature and reported). Afterwards the bench's sites (devices, rules,
alerts by cascade), the org's rules, its seeded marker and its Redis last-seen entries are removed.

    uv run python bench/alerts.py [--devices 10000] [--window-s 20] [--spread-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import random
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "loadgen"))

import common  # noqa: E402
import mqtt_wire  # noqa: E402
from common import emit, percentile  # noqa: E402
from ingest import DeviceService, insert_sites, machine_load  # noqa: E402
from loadgen import payload, values_json  # noqa: E402

from nattery_device.alerts.evaluator import AlertEvaluator  # noqa: E402
from nattery_device.alerts.schemas import RuleIn  # noqa: E402
from nattery_device.presence.latest import LAST_SEEN_KEY, latest_key  # noqa: E402
from nattery_shared.mqtt5 import wire  # noqa: E402
from nattery_shared.testing import (  # noqa: E402
    TEST_PG_DSN,
    TEST_RABBIT_URL,
    TEST_REDIS_URL,
    TestIssuer,
    lock_test_servers,
)

INFLUX = "http://127.0.0.1:8086"
DB = "nattery_bench_alerts"
MQTT_PORT = 1884
PREFIX = "benchalert"
CHECK_INTERVAL_S = float(inspect.signature(AlertEvaluator).parameters["offline_check_s"].default)


def note(message: str) -> None:
    common.note("bench-alerts", message)


def slug(i: int) -> str:
    return f"{PREFIX}-{i:05d}"


# --- setup and cleanup -----------------------------------------------------------------------
def register_sites(org_id: uuid.UUID, count: int) -> dict[str, uuid.UUID]:
    """One site with one inverter per device, straight into device's tables: device ids by site slug."""
    devices: dict[str, uuid.UUID] = insert_sites(org_id, PREFIX, [slug(i) for i in range(count)])
    return devices


def fleet_size() -> int:
    """Every device the offline check goes over (other orgs' test leftovers included)."""
    with psycopg.connect(TEST_PG_DSN, options="-c search_path=device") as conn:
        row = conn.execute("SELECT count(*) FROM devices").fetchone()
    return int(row[0]) if row else 0


def remove_sites(org_id: uuid.UUID) -> None:
    with psycopg.connect(TEST_PG_DSN, options="-c search_path=device") as conn:
        conn.execute("DELETE FROM sites WHERE slug LIKE %s", (f"{PREFIX}-%",))  # devices, alerts: cascade
        conn.execute("DELETE FROM alert_rules WHERE org_id = %s", (org_id,))
        conn.execute("DELETE FROM alert_orgs WHERE org_id = %s", (org_id,))


async def forget_presence(device_ids: list[uuid.UUID]) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(TEST_REDIS_URL)
    try:
        for i in range(0, len(device_ids), 1000):
            chunk = device_ids[i : i + 1000]
            await redis.zrem(LAST_SEEN_KEY, *(str(d) for d in chunk))
            await redis.delete(*(latest_key(d) for d in chunk))
    finally:
        await redis.aclose()


async def influx_admin(q: str) -> None:
    async with httpx.AsyncClient(base_url=INFLUX, timeout=30) as http:
        (await http.post("/query", params={"q": q})).raise_for_status()


# --- the rule, through the API -----------------------------------------------------------------
async def create_offline_rule(api: httpx.AsyncClient, window_s: int) -> tuple[str, bool]:
    """The bench's offline rule (POST seeds the org's defaults first); the default 15-minute offline rule
    disabled (PUT). Returns (rule id, whether the default was found and disabled)."""
    response = await api.post(
        "/alert-rules",
        json={
            "name": f"bench offline {window_s} s",
            "kind": "offline",
            "offline_after_s": window_s,
            "severity": "critical",
        },
    )
    response.raise_for_status()
    rule_id = str(response.json()["id"])
    disabled = False
    listing = (await api.get("/alert-rules")).json()
    rules = listing if isinstance(listing, list) else listing.get("items", [])
    for rule in rules:
        if rule.get("default_key") == "offline" and rule.get("enabled"):
            body = {k: v for k, v in rule.items() if k in RuleIn.model_fields}
            body["enabled"] = False
            (await api.put(f"/alert-rules/{rule['id']}", json=body)).raise_for_status()
            disabled = True
    return rule_id, disabled


# --- alert.raised, on a queue of our own -------------------------------------------------------
class RaisedCapture:
    """An exclusive, auto-deleted queue on ``nattery.events`` bound to ``alert.raised``: arrival times
    (epoch seconds) of the events of one rule, by device id."""

    def __init__(self, rule_id: str | None = None) -> None:
        self.rule_id = rule_id
        self.arrived: dict[str, tuple[float, str, float]] = {}  # device id -> (arrival, message, at)
        self.duplicates = 0
        self._connection: Any = None

    async def __aenter__(self) -> RaisedCapture:
        import aio_pika

        self._connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
        try:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=1000)
            exchange = await channel.declare_exchange(
                "nattery.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key="alert.raised")

            async def on_message(message: Any) -> None:
                now = time.time()
                async with message.process():
                    data = json.loads(message.body)["data"]
                    if self.rule_id is None or str(data.get("rule_id")) != self.rule_id:
                        return
                    device = str(data.get("device_id"))
                    if device in self.arrived:
                        self.duplicates += 1
                    else:
                        at = datetime.fromisoformat(str(data["at"])).timestamp()
                        self.arrived[device] = (now, str(data.get("message", "")), at)

            await queue.consume(on_message)
        except BaseException:
            await self._connection.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()


class PresenceWatch:
    """Polls presence's last-seen set in Redis for the bench's devices every 0.5 s: how many are there
    at a given moment, and when the last one arrived (the ingest path's lag, which the check reads)."""

    def __init__(self, device_ids: list[uuid.UUID]) -> None:
        self.members = [str(d) for d in device_ids]
        self.counts: list[tuple[float, int]] = []  # (epoch s, devices seen)
        self.all_seen_at: float | None = None

    async def run(self) -> None:
        from redis.asyncio import Redis

        redis = Redis.from_url(TEST_REDIS_URL)
        try:
            while self.all_seen_at is None:
                scores = await redis.zmscore(LAST_SEEN_KEY, self.members)
                seen = sum(1 for x in scores if x is not None)
                self.counts.append((time.time(), seen))
                if seen == len(self.members):
                    self.all_seen_at = time.time()
                await asyncio.sleep(0.5)
        finally:
            await redis.aclose()

    def seen_at(self, moment: float) -> int | None:
        before = [n for t, n in self.counts if t <= moment]
        return before[-1] if before else None


# --- one message per device --------------------------------------------------------------------
async def publish_once_each(slugs: list[str], spread_s: float) -> dict[str, float]:
    """One QoS 1 telemetry message per device, evenly over ``spread_s``; the sample ts (epoch s) by slug,
    once every PUBACK is in."""
    reader, writer = await mqtt_wire.open_connection(
        "127.0.0.1", MQTT_PORT, f"bench-alerts-{random.getrandbits(32):08x}", "device-service", "nattery-dev"
    )
    rng = random.Random(5)
    sent_ts: dict[str, float] = {}
    acked = 0
    inflight = asyncio.Semaphore(2000)

    async def read_acks() -> None:
        nonlocal acked
        packets = mqtt_wire.packet_reader(reader)
        while True:
            for kind, _, _ in await packets.next_packets():
                if kind == wire.PUBACK:
                    acked += 1
                    inflight.release()

    acks = asyncio.create_task(read_acks())
    started = time.monotonic()
    last_us = 0
    try:
        for i, name in enumerate(slugs):
            due = started + spread_s * i / max(1, len(slugs))
            if due > time.monotonic() + 0.005:
                await writer.drain()
                await asyncio.sleep(due - time.monotonic())
            await inflight.acquire()
            last_us = max(int(time.time() * 1_000_000), last_us + 1)
            sent_ts[name] = last_us / 1_000_000
            topic = f"nattery/v1/{name}/inv1/telemetry".encode()
            writer.write(
                mqtt_wire.publish_packet(topic, payload(last_us, 1, values_json(rng)), i % 65535 + 1)
            )
        await writer.drain()
        deadline = time.monotonic() + 30
        while acked < len(sent_ts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if acked < len(sent_ts):
            note(f"only {acked} of {len(sent_ts)} messages acked by the broker")
    finally:
        acks.cancel()
        writer.close()
    return sent_ts


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--window-s", type=int, default=20)
    parser.add_argument("--spread-s", type=float, default=10.0)
    parser.add_argument("--grace-s", type=float, default=60.0, help="wait past the last expected alert")
    args = parser.parse_args()
    if args.spread_s > args.window_s / 2:
        parser.error("--spread-s must be at most half of --window-s (see the docstring)")
    lock_test_servers("bench/alerts.py")  # a pytest session starting now would wipe our sites

    issuer = TestIssuer()
    org_id = uuid.uuid4()
    t0 = time.monotonic()
    note(f"registering {args.devices} sites with one inverter each")
    devices = register_sites(org_id, args.devices)
    provision_s = time.monotonic() - t0
    service = DeviceService(issuer)
    service.env["NATTERY_INFLUX__DATABASE"] = DB
    await influx_admin(f'CREATE DATABASE "{DB}"')
    try:
        await service.start()
        token = issuer.token(role="operator", org=org_id, expires_in_s=3600)
        async with (
            httpx.AsyncClient(
                base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api,
            RaisedCapture() as capture,
        ):
            rule_id, default_disabled = await create_offline_rule(api, args.window_s)
            capture.rule_id = rule_id
            fleet = fleet_size()
            load_at_start = machine_load()
            note(
                f"rule {rule_id} ({args.window_s} s); publishing one message per device over {args.spread_s:g} s"
            )
            watch = PresenceWatch(list(devices.values()))
            watcher = asyncio.create_task(watch.run())
            rule_created = time.time()
            t1 = time.monotonic()
            sent_ts = await publish_once_each(list(devices), args.spread_s)
            publish_s = time.monotonic() - t1
            published_at = time.time()
            expected = {str(devices[name]): ts + args.window_s for name, ts in sent_ts.items()}
            deadline = max(expected.values()) + args.grace_s
            while len(capture.arrived) < len(expected) and time.time() < deadline:
                service_alive = service.proc is not None and service.proc.poll() is None
                if not service_alive:
                    raise RuntimeError("device-service exited (var/log/bench-device.log)")
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # a late duplicate or stray would show here
            cpu_s = service.cpu_seconds()
            # The service's own counters of the path (ingest, MQTT, presence): where messages went.
            counters = {}
            for line in (await api.get("/metrics")).text.splitlines():
                name, _, value = line.rpartition(" ")
                if name.startswith(
                    ("nattery_device_ingest", "nattery_device_mqtt", "nattery_device_presence")
                ) and (name.endswith(("_total", "}")) and "_bucket" not in name):
                    counters[name] = float(value)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        latencies: list[float] = []
        raising: list[float] = []  # due -> the alert's at (the check)
        relaying: list[float] = []  # at -> received (outbox relay, RabbitMQ)
        never_sent = 0
        early = 0
        for device, due in expected.items():
            found = capture.arrived.get(device)
            if found is None:
                continue
            arrival, message, at = found
            if "never sent" in message:
                never_sent += 1  # the message was not ingested: its latency is not this figure's
                continue
            if arrival < due:
                early += 1
            latencies.append(arrival - due)
            raising.append(at - due)
            relaying.append(arrival - at)
        missing = len(expected) - len(latencies)
        strays = len(set(capture.arrived) - set(expected))
        note(f"{len(latencies)} alerts measured of {len(expected)} expected; never-sent {never_sent}")
        emit(
            "device.offline_alert_p99_s",
            round(percentile(latencies, 99, missing=missing), 3) if expected else None,
            "s",
            target="<= 10",
            reference=f"device's last message ts + rule window ({args.window_s} s) -> alert.raised received on "
            f"RabbitMQ; the offline check runs every {CHECK_INTERVAL_S:g} s, so ~{CHECK_INTERVAL_S:g} s of it is "
            "the check's own period (nearest rank; an alert that never arrived counts as infinite)",
            devices=args.devices,
            messages_published=len(sent_ts),
            alerts_expected=len(expected),
            alerts_arrived=len(latencies),
            alerts_missing=missing,
            alerts_never_sent=never_sent,
            alerts_before_due=early,
            alerts_duplicate=capture.duplicates,
            alerts_other_devices=strays,
            p50_s=round(percentile(latencies, 50), 3) if latencies else None,
            max_s=round(max(latencies), 3) if latencies else None,
            min_s=round(min(latencies), 3) if latencies else None,
            due_to_raised_p50_s=round(percentile(raising, 50), 3) if raising else None,
            due_to_raised_p99_s=round(percentile(raising, 99), 3) if raising else None,
            raised_to_received_p50_s=round(percentile(relaying, 50), 3) if relaying else None,
            raised_to_received_p99_s=round(percentile(relaying, 99), 3) if relaying else None,
            presence_all_seen_after_publish_s=round(watch.all_seen_at - published_at, 2)
            if watch.all_seen_at is not None
            else None,
            presence_seen_when_rule_window_ended=watch.seen_at(rule_created + args.window_s),
            service_counters=counters,
            check_interval_s=CHECK_INTERVAL_S,
            window_s=args.window_s,
            spread_s=args.spread_s,
            publish_s=round(publish_s, 2),
            provision_s=round(provision_s, 2),
            default_offline_rule_disabled=default_disabled,
            devices_in_db=fleet,
            service_cpu_s=round(cpu_s, 1),
            machine=load_at_start,
        )
    finally:
        service.stop()
        remove_sites(org_id)
        with contextlib.suppress(Exception):
            await forget_presence(list(devices.values()))
        with contextlib.suppress(Exception):
            await influx_admin(f'DROP DATABASE "{DB}"')


if __name__ == "__main__":
    asyncio.run(main())
