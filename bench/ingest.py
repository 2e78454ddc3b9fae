"""Benchmarks of device-service ingest and history queries (``make bench-ingest``): JSON lines.

Everything is real: the project Mosquitto (1884), InfluxDB (8086, database ``nattery_bench``, recreated),
PostgreSQL (``nattery_test``, bench sites removed afterwards) and device-service as a subprocess
(``python -m nattery_device``), fed by ``bench/loadgen`` publishing like N sites with 25-field samples.

* ``device.ceiling_mosquitto_msgs_per_s``: the broker delivering the same messages to a bare C
  subscriber (``mosquitto_sub``, QoS 1) while the load generator publishes flat out.
* ``device.ceiling_influx_lines_per_s``: InfluxDB taking the same line protocol directly (gzip, batches
  of 5000, 2 concurrent writers).
* ``device.ingest_achieved_msgs_per_s``: the achieved rate: messages stored in InfluxDB during a step's send
  window (``--step-s``), over that window, at rising offered rates (``--rates``); the best step is
  the figure, its offered and published rates beside it. Also per step: whether it kept up (everything
  published stored at >= 95 % of the offered rate, pipeline latency of ~1.5 s aside), drain time,
  probe latencies, the service's CPU, the CPU split over influxd / mosquitto / redis-server /
  device-service / this process (generator and probes) / the whole machine, and the load average and
  pytest runs at the step's start.
* ``device.ingest_p99_s``: publish -> queryable in InfluxDB, in the best step: probe samples (one every
  0.25 s, their own device) published with ts = now and polled for in InfluxDB every 50 ms. Nearest-rank
  percentiles (``bench/common.py``); a probe that has not landed 30 s after the last one was sent counts
  as infinitely late, and the count of those is reported.
* ``device.history_query_p99_ms``: GET /devices/{id}/history for one day of 5-second data (17,280
  points, 25 fields), 5 fields as 1-minute means (1,440 per field), through the REST API (auth +
  PostgreSQL lookup + InfluxDB), sequentially; the same for 1 field beside it. The day is written
  straight to InfluxDB, so its one-minute rollup is recomputed the way the ingest writer does for late
  points (telemetry/rollup.py); beside the figure, the same 5-field query on the raw points, straight
  to InfluxDB (what the endpoint paid before the rollup), and the endpoint's own InfluxDB statements
  straight to InfluxDB after each API call (``endpoint_statements_straight_to_influx_*``: InfluxDB's
  share of the figure, in the same conditions).

    uv run python bench/ingest.py [--sites 2000] [--rates 2000,4000,6000,8000,10000] [--step-s 20]
    uv run python bench/ingest.py --only history   # the history figure alone, on a quiet InfluxDB

``--only history`` skips the ceilings and the ingest steps (no flood before the queries): the same
production path (device-service as a subprocess, REST API, rollup), so it is the quiet-machine figure;
the default run measures history right after the flood. Nothing is cached: every call goes to
PostgreSQL and InfluxDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "loadgen"))

import common  # noqa: E402
import mqtt_wire  # noqa: E402
from common import emit, percentile  # noqa: E402
from loadgen import FIELDS, LoadGenerator, payload, site_slug, values_json  # noqa: E402

from nattery_device.ingest.lines import ts_ns  # noqa: E402
from nattery_device.mqtt.subscriber import forget_session  # noqa: E402
from nattery_device.telemetry.repository import reroll_statement, rollup_and_raw  # noqa: E402
from nattery_device.telemetry.rollup import ROLLUP_LAG  # noqa: E402
from nattery_shared import migrations  # noqa: E402
from nattery_shared.influx import InfluxClient  # noqa: E402
from nattery_shared.settings import InfluxSettings, MqttSettings  # noqa: E402
from nattery_shared.testing import (  # noqa: E402
    TEST_PG_DSN,
    TestIssuer,
    free_port,
    lock_test_servers,
    test_env,
)

INFLUX = "http://127.0.0.1:8086"
DB = "nattery_bench"
MQTT_PORT = 1884
PREFIX = "bench"
LIMITS = {
    "soc_min_pct": 10,
    "soc_max_pct": 95,
    "max_charge_w": 5000,
    "max_discharge_w": 5000,
    "battery_temp_min_c": 0,
    "battery_temp_max_c": 50,
    "export_limit_w": 3680,
}
PIPELINE_LATENCY_S = 1.5
THINGSBOARD = (
    "ThingsBoard single server: 30,000+ MQTT msg/s, QoS1 acked after the DB write (platform.md §1.1)"
)


def note(message: str) -> None:
    common.note("bench-ingest", message)


# --- setup ------------------------------------------------------------------------------------
def insert_sites(org_id: uuid.UUID, prefix: str, slugs: list[str]) -> dict[str, uuid.UUID]:
    """One site with one inverter per slug, straight into device's tables (no MQTT credentials: the
    generator publishes with the service account), after removing the ``prefix-`` sites an earlier run
    left. Returns device ids by site slug. Shared with bench/alerts.py."""
    migrations.upgrade(REPO / "services/device/src/nattery_device/migrations", TEST_PG_DSN, "device")
    devices: dict[str, uuid.UUID] = {}
    with psycopg.connect(TEST_PG_DSN, options="-c search_path=device") as conn:
        conn.execute("DELETE FROM sites WHERE slug LIKE %s", (f"{prefix}-%",))
        with conn.cursor() as cur:
            site_rows, device_rows = [], []
            for slug in slugs:
                site_id, device_id = uuid.uuid4(), uuid.uuid4()
                devices[slug] = device_id
                site_rows.append((site_id, org_id, slug, slug, "UTC", Jsonb(LIMITS)))
                device_rows.append((device_id, org_id, site_id, "inv1", "inverter"))
            cur.executemany(
                "INSERT INTO sites (id, org_id, slug, name, timezone, safety_limits) VALUES (%s, %s, %s, %s, %s, %s)",
                site_rows,
            )
            cur.executemany(
                "INSERT INTO devices (id, org_id, site_id, slug, kind) VALUES (%s, %s, %s, %s, %s)",
                device_rows,
            )
    return devices


def register_sites(org_id: uuid.UUID, sites: int) -> dict[str, uuid.UUID]:
    """The bench's sites, plus the probe and history devices: device ids by site slug."""
    slugs = [site_slug(PREFIX, i) for i in range(sites)] + [f"{PREFIX}-probe", f"{PREFIX}-history"]
    return insert_sites(org_id, PREFIX, slugs)


def remove_sites() -> None:
    with psycopg.connect(TEST_PG_DSN, options="-c search_path=device") as conn:
        conn.execute("DELETE FROM sites WHERE slug LIKE %s", (f"{PREFIX}-%",))


async def influx_admin(http: httpx.AsyncClient, q: str) -> None:
    (await http.post("/query", params={"q": q})).raise_for_status()


async def influx_query(http: httpx.AsyncClient, q: str) -> list[list[Any]]:
    response = await http.get("/query", params={"db": DB, "q": q, "epoch": "ns"})
    response.raise_for_status()
    series = response.json()["results"][0].get("series") or []
    return series[0]["values"] if series else []


class DeviceService:
    def __init__(self, issuer: TestIssuer) -> None:
        self.port = free_port()
        self.client_id = f"bench-device-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            **test_env(issuer),
            "NATTERY_PORT": str(self.port),
            "NATTERY_LOG_LEVEL": "WARNING",
            "NATTERY_INFLUX__DATABASE": DB,
            "NATTERY_DEVICE__MQTT_CLIENT_ID": self.client_id,
            "NATTERY_DEVICE__MQTT_SHARE_GROUP": f"bench{uuid.uuid4().hex[:6]}",
            "NATTERY_DEVICE__MOSQUITTO_PASSWORD_FILE": str(REPO / "var/mosquitto/passwd"),
            "NATTERY_DEVICE__MOSQUITTO_PID_FILE": str(REPO / "var/mosquitto/mosquitto.pid"),
            "NATTERY_DEVICE__CREDENTIALS_SYNC_S": "3600",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = (REPO / "var/log/bench-device.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "nattery_device"], env=self.env, stdout=log, stderr=log, cwd=REPO
        )
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    checks = (await http.get("/readyz")).json()["checks"]
                    if checks.get("mqtt") == "ok" and checks.get("postgres") == "ok":
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("device-service did not become ready (var/log/bench-device.log)")

    async def points_written(self, http: httpx.AsyncClient) -> float:
        text = (await http.get(f"{self.url}/metrics")).text
        match = re.search(r"^nattery_device_ingest_points_written_total (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        mqtt = MqttSettings(port=MQTT_PORT, username="device-service", password=SecretStr("nattery-dev"))
        for suffix in ("telemetry", "control"):
            forget_session(mqtt, f"{self.client_id}-{suffix}")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid_of(pidfile: str | None, name: str) -> int | None:
    path = REPO / pidfile if pidfile else None
    if path is not None and path.exists():
        with contextlib.suppress(ValueError):
            return int(path.read_text().split()[0])
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


class CpuSplit:
    """Where the machine's CPU went during a step: the servers on the data path, the service, this
    process (load generator + probes), everything else; percent of one core. The machine has
    ``os.cpu_count()`` cores, so the ceiling is 100 x that."""

    def __init__(self, service: DeviceService) -> None:
        assert service.proc is not None
        self.pids = {
            "influxd": _pid_of("var/influxdb/influxd.pid", "influxd"),
            "mosquitto": _pid_of("var/mosquitto/mosquitto.pid", "mosquitto"),
            "redis": _pid_of(None, "redis-server"),
            "device_service": service.proc.pid,
            "loadgen_and_probes": os.getpid(),
        }
        self.before = self._sample()

    def _sample(self) -> tuple[float, dict[str, float], float]:
        stat = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(stat[:8]) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")
        procs = {name: process_cpu_s(pid) if pid else 0.0 for name, pid in self.pids.items()}
        return time.monotonic(), procs, busy

    def result(self) -> dict[str, int]:
        t0, procs0, busy0 = self.before
        t1, procs1, busy1 = self._sample()
        elapsed = max(1e-9, t1 - t0)
        out = {name: round(100 * (procs1[name] - procs0[name]) / elapsed) for name in self.pids}
        out["machine_busy"] = round(100 * (busy1 - busy0) / elapsed)
        out["other"] = out["machine_busy"] - sum(v for k, v in out.items() if k != "machine_busy")
        return out


def machine_load() -> str:
    """Load average and other test runs at this moment (a benchmark figure is only as good as this)."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    others = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    return f"load {load}; pytest processes running: {len(others)}"


# --- ceilings ---------------------------------------------------------------------------------
async def ceiling_mosquitto(sites: int, seconds: float = 8.0) -> tuple[float, float]:
    """(delivered msg/s, published msg/s): the generator flat out, ``mosquitto_sub`` counting lines."""
    if shutil.which("mosquitto_sub") is None:
        return float("nan"), float("nan")
    group = f"bare{uuid.uuid4().hex[:6]}"
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        str(MQTT_PORT),
        "-u",
        "device-service",
        "-P",
        "nattery-dev",
        "-q",
        "1",
        "-F",
        "%m",
        "-t",
        f"$share/{group}/nattery/v1/+/+/telemetry",
        stdout=asyncio.subprocess.PIPE,
    )
    assert sub.stdout is not None
    received = 0
    first: float | None = None
    last = 0.0

    async def count() -> None:
        nonlocal received, first, last
        assert sub.stdout is not None
        while chunk := await sub.stdout.read(1 << 16):
            received += chunk.count(b"\n")
            last = time.monotonic()
            first = first or last

    counter = asyncio.create_task(count())
    await asyncio.sleep(1.0)
    generator = LoadGenerator(sites=sites, prefix=f"{PREFIX}-bare", connections=2, max_inflight=5000)
    started = time.monotonic()
    stats = await generator.run(rate_per_s=100_000, duration_s=seconds)
    published_rate = stats.published / (time.monotonic() - started)
    await asyncio.sleep(2.0)
    sub.kill()
    await sub.wait()
    counter.cancel()
    delivered_rate = received / max(1e-9, last - started)
    return delivered_rate, published_rate


async def ceiling_influx(http: httpx.AsyncClient, sites: int, lines_total: int) -> float:
    rng = random.Random(3)
    prefixes = [
        f"inverter,device={uuid.uuid4()},org={uuid.uuid4()},site={uuid.uuid4()} " for _ in range(sites)
    ]
    fields = ",".join(f"{k}={round(rng.uniform(lo, hi), 2)}" for k, (lo, hi) in FIELDS.items())
    t0 = int((time.time() - 3600) * 1e9)
    lines = [f"{prefixes[i % sites]}{fields} {t0 + i * 1000}" for i in range(lines_total)]
    batches = [gzip.compress("\n".join(lines[i : i + 5000]).encode(), 1) for i in range(0, len(lines), 5000)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def writer() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            response = await http.post(
                "/write",
                params={"db": DB, "precision": "ns"},
                content=body,
                headers={"Content-Encoding": "gzip"},
            )
            response.raise_for_status()

    started = time.monotonic()
    await asyncio.gather(writer(), writer())
    return lines_total / (time.monotonic() - started)


# --- ingest steps ------------------------------------------------------------------------------
async def probe_latencies(
    stop: asyncio.Event, http: httpx.AsyncClient, probe_device: uuid.UUID
) -> tuple[list[float], int]:
    """Latencies of the probes that landed, and how many never did (given up 30 s after the last)."""
    reader, writer = await mqtt_wire.open_connection(
        "127.0.0.1", MQTT_PORT, f"bench-probe-{uuid.uuid4().hex[:6]}", "device-service", "nattery-dev"
    )
    topic = f"nattery/v1/{PREFIX}-probe/inv1/telemetry".encode()
    values = values_json(random.Random(5))
    sent: dict[int, float] = {}
    latencies: list[float] = []
    since_ns = time.time_ns() - 10**9

    async def publish() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            ts_us = int(time.time() * 1e6)
            sent[ts_us * 1000] = time.monotonic()  # matched by timestamp (seq is not stored as a field)
            writer.write(mqtt_wire.publish_packet(topic, payload(ts_us, seq, values), seq % 65535 + 1))
            await writer.drain()
            await asyncio.sleep(0.25)

    async def drain_acks() -> None:
        while True:
            await mqtt_wire.read_packet(reader)

    async def poll() -> None:
        while not stop.is_set() or sent:
            rows = await influx_query(
                http,
                f"SELECT battery_soc_pct FROM inverter WHERE device = '{probe_device}' AND time > {since_ns}",
            )
            now = time.monotonic()
            for row in rows:
                published = sent.pop(int(row[0]), None)
                if published is not None:
                    latencies.append(now - published)
            if stop.is_set() and sent and now - max(sent.values()) > 30:
                break  # never landed: counted as missing by the caller
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(publish()), asyncio.create_task(drain_acks())]
    await poll()
    for task in tasks:
        task.cancel()
    writer.close()
    return latencies, len(sent)


async def ingest_step(
    service: DeviceService,
    http: httpx.AsyncClient,
    generator: LoadGenerator,
    probe_device: uuid.UUID,
    rate: float,
    step_s: float,
) -> dict[str, Any]:
    before = await service.points_written(http)
    cpu_before = service.cpu_seconds()
    split = CpuSplit(service)
    load_at_start = machine_load()
    stop = asyncio.Event()
    probes = asyncio.create_task(probe_latencies(stop, http, probe_device))
    started = time.monotonic()
    stats = await generator.run(rate, step_s)
    publish_s = time.monotonic() - started
    written_during = await service.points_written(http) - before
    cpu = service.cpu_seconds() - cpu_before
    cpu_split = split.result()
    drained_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await service.points_written(http) - before >= stats.published:
            drained_at = time.monotonic()
            break
        await asyncio.sleep(0.1)
    stop.set()
    latencies, missing = await probes
    drain_s = (drained_at - started - publish_s) if drained_at else float("inf")
    probes_sent = len(latencies) + missing
    result = {
        "offered": rate,
        "published_per_s": round(stats.published / publish_s),
        "published": stats.published,
        # Stored (written to InfluxDB) during the send window, over the send window: the pipeline's
        # own latency at the start of the window counts against it.
        "achieved": round(written_during / publish_s),
        "stored_in_window": round(written_during),
        "send_window_s": round(publish_s, 2),
        "drain_s": round(drain_s, 2),
        "p50_s": round(percentile(latencies, 50, missing=missing), 3) if probes_sent else None,
        "p99_s": round(percentile(latencies, 99, missing=missing), 3) if probes_sent else None,
        "probes": probes_sent,
        "probes_missing": missing,
        "service_cpu_pct": round(100 * cpu / publish_s),
        "cpu_pct_of_one_core": cpu_split,
        "machine": load_at_start,
    }
    # Throughput over the step: everything published, over the time until it was all stored, less the
    # pipeline's own latency (flush interval + a write, ~1.5 s), which is latency, not a backlog.
    result["throughput"] = round(stats.published / (publish_s + max(0.0, drain_s - PIPELINE_LATENCY_S)))
    result["kept_up"] = bool(result["throughput"] >= 0.95 * stats.published / publish_s)
    note(f"step {result}")
    # Let a backlog finish before the next step.
    deadline = time.monotonic() + 120
    while await service.points_written(http) - before < stats.published and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return result


# --- history ---------------------------------------------------------------------------------
async def history_bench(
    service: DeviceService,
    http: httpx.AsyncClient,
    issuer: TestIssuer,
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    queries: int,
    fields: str,
    *,
    write: bool = True,
    raw_ms: list[float],
    influx_ms: list[float] | None = None,
) -> list[float]:
    rng = random.Random(11)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=1)
    prefix = f"inverter,device={device_id},org={org_id},site=history "
    lines = []
    for i in range(17_280):
        ts = int((start + timedelta(seconds=5 * i)).timestamp() * 1e9)
        values = ",".join(f"{k}={round(rng.uniform(lo, hi), 2)}" for k, (lo, hi) in FIELDS.items())
        lines.append(f"{prefix}{values} {ts}")
    for i in range(0, len(lines) if write else 0, 5000):
        body = gzip.compress("\n".join(lines[i : i + 5000]).encode(), 1)
        (
            await http.post("/write", params={"db": DB}, content=body, headers={"Content-Encoding": "gzip"})
        ).raise_for_status()
    if write:
        # Written straight to InfluxDB, a day late: exactly what the ingest writer does with late points,
        # recompute their minutes in the one-minute rollup (telemetry/rollup.py).
        statement = reroll_statement(DB, "inverter", str(device_id), ts_ns(start), ts_ns(end))
        (await http.post("/query", params={"q": statement})).raise_for_status()
    token = issuer.token(role="viewer", org=org_id, expires_in_s=3600)
    params = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "interval": "1m",
        "aggregate": "mean",
        "fields": fields,
    }
    timings: list[float] = []
    raw_ms.clear()
    if write:  # the reference: the same aggregation on the raw points, straight to InfluxDB
        names = fields.split(",")
        where = f"\"org\" = '{org_id}' AND \"device\" = '{device_id}' AND time >= {ts_ns(start)} AND time < {ts_ns(end)}"
        statements = [
            "SELECT " + ", ".join(f'mean("{f}") AS "{f}"' for f in group) + f' FROM "inverter" WHERE {where} '
            "GROUP BY time(1m) fill(none)"
            for group in (names[0::2], names[1::2])
        ]
        for i in range(min(queries, 100) + 5):
            t = time.perf_counter()
            await asyncio.gather(*(influx_query(http, q) for q in statements))
            if i >= 5:
                raw_ms.append((time.perf_counter() - t) * 1000)
    # The endpoint's own InfluxDB statements (repository.rollup_and_raw: the rollup's minutes and the
    # last minutes from the raw points, in parallel) through the shared client, no API: after each call,
    # so both see the same InfluxDB (what InfluxDB alone costs, e.g. while it compacts after the flood).
    influx = InfluxClient(InfluxSettings(url=INFLUX, database=DB))
    device_row = {"id": device_id, "org_id": org_id}
    names = fields.split(",")
    async with httpx.AsyncClient(base_url=service.url, headers={"Authorization": f"Bearer {token}"}) as api:
        for i in range(queries + 5):
            t = time.perf_counter()
            response = await api.get(f"/devices/{device_id}/history", params=params)
            elapsed = time.perf_counter() - t
            response.raise_for_status()
            if i == 0:
                assert len(response.json()["points"]) >= 1439, len(
                    response.json()["points"]
                )  # minute may turn
            if i >= 5:  # warm-up: JWKS fetch, connection pools
                timings.append(elapsed * 1000)
            if influx_ms is not None:
                last = min(end, (datetime.now(UTC) - ROLLUP_LAG).replace(second=0, microsecond=0))
                t = time.perf_counter()
                await rollup_and_raw(
                    influx,
                    "inverter",
                    device_row,
                    (start, last),
                    [(last, end)] if last < end else [],
                    names,
                    "mean",
                    "1m",
                    10_000,
                )
                if i >= 5:
                    influx_ms.append((time.perf_counter() - t) * 1000)
    await influx.close()
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=2000)
    parser.add_argument("--rates", default="2000,4000,6000,8000,10000")
    parser.add_argument("--step-s", type=float, default=20.0)
    parser.add_argument("--history-queries", type=int, default=200)
    parser.add_argument("--skip-ceilings", action="store_true")
    parser.add_argument(
        "--only", choices=["history"], help="history: no ceilings, no ingest steps (a quiet InfluxDB)"
    )
    args = parser.parse_args()
    only_history = args.only == "history"
    rates = [float(r) for r in args.rates.split(",")]
    lock_test_servers("bench/ingest.py")  # a pytest session starting now would wipe our sites

    issuer = TestIssuer()
    org_id = uuid.uuid4()
    note(f"registering {args.sites} sites")
    devices = register_sites(org_id, args.sites)
    service = DeviceService(issuer)
    async with httpx.AsyncClient(base_url=INFLUX, timeout=60) as http:
        await influx_admin(http, f'DROP DATABASE "{DB}"')
        await influx_admin(http, f'CREATE DATABASE "{DB}"')
        try:
            if not args.skip_ceilings and not only_history:
                mosq, offered = await ceiling_mosquitto(args.sites)
                note(f"mosquitto -> mosquitto_sub: {mosq:.0f} msg/s delivered, generator {offered:.0f} msg/s")
                influx = await ceiling_influx(http, args.sites, 200_000)
                note(f"influxdb direct: {influx:.0f} lines/s")
                emit(
                    "device.ceiling_mosquitto_msgs_per_s",
                    round(mosq),
                    "msg/s",
                    reference=f"same 25-field messages, generator flat out at {offered:.0f} msg/s (QoS 1, acked), "
                    "delivered to a bare C subscriber (mosquitto_sub, QoS 1, shared subscription)",
                )
                emit(
                    "device.ceiling_influx_lines_per_s",
                    round(influx),
                    "lines/s",
                    reference="same line protocol, gzip, batches of 5000, 2 concurrent writers",
                )
                await influx_admin(http, f'DROP DATABASE "{DB}"')
                await influx_admin(http, f'CREATE DATABASE "{DB}"')
            await service.start()
            generator = LoadGenerator(sites=args.sites, prefix=PREFIX, connections=2, max_inflight=5000)
            steps = []
            for rate in [] if only_history else rates:
                steps.append(
                    await ingest_step(service, http, generator, devices[f"{PREFIX}-probe"], rate, args.step_s)
                )
            if steps:
                best = max(steps, key=lambda s: s["achieved"])
                emit(
                    "device.ingest_achieved_msgs_per_s",
                    best["achieved"],
                    "msg/s",
                    target=">= 10000",
                    reference=THINGSBOARD,
                    definition="messages stored in InfluxDB during the send window / the send window, best step",
                    offered_per_s=best["offered"],
                    published_per_s=best["published_per_s"],
                    kept_up=best["kept_up"],
                    steps=steps,
                )
                emit(
                    "device.ingest_p99_s",
                    best["p99_s"],
                    "s",
                    target="< 2",
                    reference="probe publish -> visible in InfluxDB (nearest rank; a probe that never lands "
                    "counts as infinite)",
                    at_offered_per_s=best["offered"],
                    p50_s=best["p50_s"],
                    probes=best["probes"],
                    probes_missing=best["probes_missing"],
                    worst_step_p99_s=max((s["p99_s"] for s in steps if s["p99_s"] is not None), default=None),
                    probes_missing_all_steps=sum(s["probes_missing"] for s in steps),
                )
            history_after = "the ingest steps" if steps else "nothing (--only history: a quiet InfluxDB)"
            await asyncio.sleep(
                5 if steps else 0
            )  # let InfluxDB finish compacting what the ingest steps wrote
            history = devices[f"{PREFIX}-history"]
            raw: list[float] = []
            rollup_straight: list[float] = []
            five = await history_bench(
                service,
                http,
                issuer,
                org_id,
                history,
                args.history_queries,
                "battery_power_w,battery_soc_pct,pv_power_w,load_power_w,grid_power_w",
                raw_ms=raw,
                influx_ms=rollup_straight,
            )
            one = await history_bench(
                service,
                http,
                issuer,
                org_id,
                history,
                args.history_queries,
                "battery_power_w",
                write=False,
                raw_ms=[],
            )
            emit(
                "device.history_query_p99_ms",
                round(percentile(five, 99), 1),
                "ms",
                target="< 100",
                reference="the same 5-field one-minute means on the raw points, straight to InfluxDB "
                "(two parallel statements, no API): raw_points_straight_to_influx_*; the endpoint's own "
                "InfluxDB statements (rollup + last minutes raw, shared client, no API), each right after "
                "an API call: endpoint_statements_straight_to_influx_*",
                query="GET /devices/{id}/history, one day of 5 s data (17,280 points x 25 fields stored), "
                "5 fields -> 1,440 one-minute means each, through the REST API (auth, PostgreSQL, InfluxDB), "
                "sequential",
                p50_ms=round(percentile(five, 50), 1),
                calls=len(five),
                one_field_p50_ms=round(percentile(one, 50), 1),
                one_field_p99_ms=round(percentile(one, 99), 1),
                raw_points_straight_to_influx_p50_ms=round(percentile(raw, 50), 1),
                raw_points_straight_to_influx_p99_ms=round(percentile(raw, 99), 1),
                endpoint_statements_straight_to_influx_p50_ms=round(percentile(rollup_straight, 50), 1),
                endpoint_statements_straight_to_influx_p99_ms=round(percentile(rollup_straight, 99), 1),
                read_from="one-minute rollup (telemetry/rollup.py); the last 2 minutes from the raw points",
                measured_after=history_after,
                machine=machine_load(),
            )
        finally:
            service.stop()
            remove_sites()
            with contextlib.suppress(Exception):
                await influx_admin(http, f'DROP DATABASE "{DB}"')


if __name__ == "__main__":
    asyncio.run(main())
