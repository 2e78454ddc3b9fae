"""Integration-service benchmarks (``make bench-integration``): JSON lines (``bench/common.py``).

- ``integration.webhook_accept_p99_ms``: a signed Standard Webhooks delivery (HMAC-SHA256 over the raw
  body) POSTed to ``/webhooks/{provider}`` until its 200, which the service sends only once the delivery
  is stored in PostgreSQL. Offered open-loop at ``--rate`` deliveries/s (default 500) for ``--seconds``
  (default 10) by ``--senders`` processes (default 2) over ``--connections`` keep-alive connections
  (default 64): each delivery has its due time, and its latency counts from that time, so a server that
  falls behind shows it (no coordinated omission); ``sender_late_p99_ms`` is due time -> request
  written, waiting for a free connection included (so a slow service raises it too: read it with the
  senders' CPU per delivery, which shows a client that cannot keep up). The
  service runs as its own process (``nattery-integration serve``, uvicorn; ``WEB_CONCURRENCY`` workers,
  1 unless set) against the local test PostgreSQL/Redis/RabbitMQ, with its webhook worker on
  (deliveries are processed, as unhandled, while the load runs) and its scheduled jobs off. Beside it:
  the achieved rate (accepted 200s per second from the first due time to the last answer), and the CPU
  per delivery of the service and of the senders.
- ``integration.prices_to_schedules_s``: the production path from a provider to the fleet's schedules.
  ``--sites`` (1,000) trading sites configured on Octopus Agile region J (bench/trading.py's
  ``setup_fleet_db`` in database ``nattery_bench_integration``, which also holds this service's schema),
  the real trading service and fleet-worker (bench/trading.py's ``TradingProcesses``), the replay server
  (``python -m nattery_integration.replay``, publishing exactly today's Agile day) and a
  ``nattery-integration`` process with its jobs on. One org's Octopus connection is stored and the
  ``markets.octopus`` job made due: the job fetches the day from the replay server, stores the set and
  its event in one transaction, the relay publishes ``market.prices_updated``; the figure is the time
  from that event on RabbitMQ to the last of the ``--sites`` ``schedule.published`` events.

The whole run holds the test-servers lock (the test RabbitMQ vhost, Redis and ``nattery_test``).

    uv run python bench/integration.py [--rate 500] [--seconds 10] [--senders 2] [--connections 64]
        [--sites 1000] [--workers 2] [--only webhooks|prices]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from common import ServiceProcess, consumer_count, emit, note, percentile, purge_service_queues, stop_all

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TEST_RABBIT_URL, free_port, lock_test_servers, test_env

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"bench-webhook-secret-32-bytes!!!").decode()
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
TARGET_MS = 50.0
TARGET_PRICES_S = 10.0
PRICES_DB = "nattery_bench_integration"
AGILE, AGILE_REGION = "octopus-agile", "J"
LONDON = ZoneInfo("Europe/London")


def signed(body: bytes) -> dict[str, str]:
    delivery_id = f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    mac = hmac.new(KEY, f"{delivery_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


# --- the open-loop sender ------------------------------------------------------------------------
# Each sender process owns every ``senders``-th delivery of the schedule (delivery i is due at
# start + i / rate) and a few keep-alive HTTP/1.1 connections. It sends a delivery at its due time on a
# free connection (a delivery that finds none waits for one, and that wait counts: latency runs from
# the due time). The client is a few lines over asyncio streams on uvloop, not httpx: at 500/s httpx
# in one process cost more CPU than the service (see services/integration/README.md "Benchmarks").
@dataclass
class SenderResult:
    latencies_s: list[float] = field(default_factory=list)  # due time -> 200 "accepted" read
    late_s: list[float] = field(default_factory=list)  # due time -> written (free-connection wait included)
    failures: dict[str, int] = field(default_factory=dict)
    last_answer: float = 0.0  # time.monotonic() of the last answer
    cpu_s: float = 0.0


def _request(path: str, host: str, body: bytes) -> bytes:
    headers = signed(body)
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _send_share(
    port: int, start: float, rate: float, total: int, index: int, senders: int, connections: int
) -> SenderResult:
    out = SenderResult()
    body = json.dumps({"type": "dispatch.created", "data": {"site": "bench", "power_kw": 3.5}}).encode()
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    host = f"127.0.0.1:{port}"
    loop = asyncio.get_running_loop()

    async def one(due: float) -> None:
        reader, writer = await free.get()
        try:
            writer.write(_request("/webhooks/bench", host, body))
            out.late_s.append(time.monotonic() - due)
            status, answer = await _answer(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            out.failures[type(err).__name__] = out.failures.get(type(err).__name__, 0) + 1
            writer.close()
            free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
            return
        now = time.monotonic()
        out.last_answer = max(out.last_answer, now)
        free.put_nowait((reader, writer))
        if status == 200 and b'"accepted"' in answer:
            out.latencies_s.append(now - due)
        else:
            out.failures[f"HTTP {status}"] = out.failures.get(f"HTTP {status}", 0) + 1

    tasks = []
    for i in range(index, total, senders):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        _, writer = free.get_nowait()
        writer.close()
    out.cpu_s = time.process_time()
    return out


def _sender_process(conn: Any, port: int, start: float, rate: float, total: int, index: int, senders: int,
                    connections: int) -> None:  # fmt: skip
    import uvloop

    conn.send(uvloop.run(_send_share(port, start, rate, total, index, senders, connections)))
    conn.close()


def offer(port: int, rate: float, seconds: float, senders: int, connections: int) -> dict[str, Any]:
    """Offer ``rate`` signed deliveries/s for ``seconds`` from ``senders`` processes (open loop)."""
    import multiprocessing

    total = int(rate * seconds)
    ctx = multiprocessing.get_context("fork")
    start = time.monotonic() + 1.0  # every sender connected and waiting before the first due time
    pipes, procs = [], []
    for index in range(senders):
        mine, theirs = ctx.Pipe(duplex=False)
        args = (theirs, port, start, rate, total, index, senders, max(1, connections // senders))
        proc = ctx.Process(target=_sender_process, args=args, daemon=True)
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    results: list[SenderResult] = [p.recv() for p in pipes]
    for proc in procs:
        proc.join(10)
    latencies = [x for r in results for x in r.latencies_s]
    late = [x for r in results for x in r.late_s]
    failures: dict[str, int] = {}
    for r in results:
        for k, v in r.failures.items():
            failures[k] = failures.get(k, 0) + v
    span = max((r.last_answer for r in results), default=start) - start
    return {
        "latencies": latencies,
        "failures": failures,
        "achieved_per_s": len(latencies) / span if span > 0 else 0.0,
        "sender_late_p99_ms": round(percentile(late, 99) * 1000, 2) if late else None,
        "sender_cpu_s": round(sum(r.cpu_s for r in results), 2),
        "deliveries": total,
    }


def bench_webhooks(args: argparse.Namespace) -> None:
    migrations.upgrade(
        ROOT / "services/integration/src/nattery_integration/migrations", TEST_PG_DSN, "integration"
    )
    port = free_port()
    env = {
        **os.environ,
        **test_env(),
        "NATTERY_PORT": str(port),
        "NATTERY_LOG_LEVEL": "WARNING",
        "NATTERY_INTEGRATION__WEBHOOKS__SECRETS": json.dumps({"bench": SECRET}),
        "NATTERY_INTEGRATION__JOBS__ENABLED": "false",
        "NATTERY_INTEGRATION__REDIS_PREFIX": f"nattery:integration:bench-{uuid.uuid4().hex[:6]}:",
    }
    service = ServiceProcess(
        [sys.executable, "-m", "nattery_integration", "serve"], env, "bench-integration-webhooks", port=port
    )
    with service:
        asyncio.run(service.wait_ready())
        warm = offer(port, 100, 1, 1, 8)  # imports, pool connections, JIT-free but cold caches: not measured
        note("integration", f"warm-up: {len(warm['latencies'])} accepted; offering {args.rate:g}/s")
        cpu0, t0 = service.cpu_s(), time.monotonic()
        r = offer(port, args.rate, args.seconds, args.senders, args.connections)
        service_cpu_s = service.cpu_s() - cpu0
        wall_s = time.monotonic() - t0
    latencies, failures = r["latencies"], sum(r["failures"].values())
    measured = bool(latencies or failures)
    emit(
        "integration.webhook_accept_p99_ms",
        round(percentile(latencies, 99, missing=failures) * 1000, 2) if measured else None,
        "ms",
        target=f"<= {TARGET_MS:g} ms at {args.rate:g}/s",
        reference="signed delivery to 200 (stored in PostgreSQL); latency from the scheduled send time "
        f"(open loop, {args.senders} sender processes, {args.connections} keep-alive connections)",
        offered_per_s=args.rate,
        achieved_per_s=round(r["achieved_per_s"], 1),
        deliveries=r["deliveries"],
        failures=failures,
        failure_kinds=r["failures"],
        p50_ms=round(percentile(latencies, 50) * 1000, 2) if latencies else None,
        p999_ms=round(percentile(latencies, 99.9, missing=failures) * 1000, 2) if measured else None,
        sender_late_p99_ms=r["sender_late_p99_ms"],
        service_cpu_ms_per_delivery=round(1000 * service_cpu_s / max(1, r["deliveries"]), 3),
        service_cpu_share=round(service_cpu_s / wall_s, 2),
        sender_cpu_ms_per_delivery=round(1000 * r["sender_cpu_s"] / max(1, r["deliveries"]), 3),
        uvicorn_workers=int(env.get("WEB_CONCURRENCY", "1") or 1),
    )


# --- prices -> schedules through the production path ----------------------------------------------
def _end_of_agile_day(now: datetime) -> datetime:
    """The end (23:00 UK) of the Agile delivery day under way: the replay publishes up to there only,
    so the job finds exactly one complete day (tomorrow's, after 16:00 UK, stays "not yet")."""
    local = now.astimezone(LONDON)
    day = (local + timedelta(hours=1)).date()  # the window of day D starts at 23:00 on D-1
    return datetime.combine(day, clock_time(23, 0), LONDON).astimezone(UTC)


async def _prices_to_schedules(n: int, workers: int, history_days: int) -> dict[str, Any]:
    import aio_pika
    import psycopg
    import trading  # bench/trading.py: the fleet's database and processes, shared

    from nattery_integration.connections import repository as connections

    t = time.monotonic()
    trading.setup_fleet_db(n, history_days, database=PRICES_DB, market=AGILE, region=AGILE_REGION)
    dsn = trading._dsn(PRICES_DB)
    migrations.upgrade(ROOT / "services/integration/src/nattery_integration/migrations", dsn, "integration")
    note(
        "integration", f"fleet database: {n} sites on {AGILE} {AGILE_REGION} in {time.monotonic() - t:.0f} s"
    )

    replay_port, port = free_port(), free_port()
    replay_base = f"http://127.0.0.1:{replay_port}"
    paths = {
        "OCTOPUS": "/octopus/v1/",
        "ELEXON": "/elexon/bmrs/api/v1/",
        "MODO": "/modo/pub/v1/",
        "ENTSOE": "/entsoe/",
        "OPEN_METEO": "/open-meteo/v1/",
    }
    env = {
        **os.environ,
        **test_env(),
        "NATTERY_POSTGRES__DSN": dsn,
        "NATTERY_PORT": str(port),
        "NATTERY_LOG_LEVEL": "WARNING",
        "NATTERY_INTEGRATION__REDIS_PREFIX": f"nattery:integration:bench-{uuid.uuid4().hex[:6]}:",
        **{f"NATTERY_INTEGRATION__{p}__BASE_URL": replay_base + path for p, path in paths.items()},
    }
    queue_name = f"bench.integration.site_plans.{os.getpid()}"
    fleet = trading.TradingProcesses(workers, queue_name, PRICES_DB, "bench-integration-trading")
    service = ServiceProcess(
        [sys.executable, "-m", "nattery_integration", "serve"], env, "bench-integration-service", port=port
    )
    replay = ServiceProcess(
        [sys.executable, "-m", "nattery_integration.replay", "--port", str(replay_port)],
        {**os.environ},
        "bench-integration-replay",
    ).start()
    try:
        connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
    except BaseException:
        replay.stop()
        raise
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("nattery.events", aio_pika.ExchangeType.TOPIC, durable=True)
        listen = await channel.declare_queue(exclusive=True, auto_delete=True)
        await listen.bind(exchange, routing_key="schedule.published")
        await listen.bind(exchange, routing_key="market.prices_updated")
        seen: set[str] = set()
        prices_events: list[tuple[float, dict[str, Any]]] = []
        arrivals: list[float] = []
        early: list[str] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = json.loads(message.body)
            if message.routing_key == "market.prices_updated":
                if event["data"].get("market") == AGILE:
                    prices_events.append((time.monotonic(), event))
                return
            if not prices_events:
                early.append(event["data"]["site_id"])  # not caused by the event measured
                return
            site = event["data"]["site_id"]
            if site not in seen:
                seen.add(site)
                arrivals.append(time.monotonic())
                if len(seen) >= n:
                    done.set()

        await listen.consume(on_message, no_ack=True)

        async def consumers() -> int:
            return await consumer_count(connection, queue_name)

        fleet.start()
        async with httpx.AsyncClient(base_url=replay_base, timeout=5) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    until = _end_of_agile_day(datetime.now(UTC)).isoformat()
                    r = await http.post("/_replay/octopus", json={"published_until": until})
                    if r.status_code == 200:
                        break
                replay.check_running()
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the replay server did not start")
        await fleet.wait_ready(consumers)
        service.start()
        await service.wait_ready()
        org = uuid.uuid4()
        async with await psycopg.AsyncConnection.connect(dsn, options="-c search_path=integration") as conn:
            await connections.insert(
                conn,
                connection_id=uuid.uuid4(),
                org_id=org,
                provider="octopus",
                name="bench agile",
                settings={"region": AGILE_REGION, "product_code": "AGILE-24-10-01"},
                secret_names=[],
                blob=None,
                key_id=None,
                enabled=True,
            )
            await conn.commit()
            for _ in range(600):  # the job's row appears once the runner has registered the area's jobs
                # (a run under way when this lands may set the next minute's slot instead: at most 60 s
                # more before the event, outside the figure)
                cur = await conn.execute("UPDATE jobs SET next_run_at = now() WHERE name = 'markets.octopus'")
                await conn.commit()
                if cur.rowcount:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the markets.octopus job never appeared")
        note("integration", "octopus connection stored, markets.octopus due; waiting for the schedules")
        try:
            await asyncio.wait_for(done.wait(), timeout=600)
        except TimeoutError:
            note("integration", f"only {len(seen)} of {n} schedules after 600 s")
        end = time.monotonic()
    finally:
        service.terminate()
        fleet.stop()
        stop_all([service, replay])
        with contextlib.suppress(Exception):
            ch = await connection.channel()
            for q in (queue_name, f"{queue_name}.dlq"):
                await ch.queue_delete(q)
        with contextlib.suppress(Exception):
            await purge_service_queues(connection)
        await connection.close()
    if not prices_events:
        return {
            "elapsed_s": None,
            "published": len(seen),
            "prices_events": 0,
            "why": "no market.prices_updated",
        }
    t0, first = prices_events[0]
    last = max(arrivals) if arrivals else None
    return {
        "elapsed_s": (last - t0) if last is not None and len(seen) >= n else (end - t0 if seen else None),
        "published": len(seen),
        "prices_events": len(prices_events),
        "prices_points": len(first["data"].get("prices", [])),
        "prices_source": first.get("source"),
        "schedules_before_the_event": len(early),
        "first_schedule_s": round(min(arrivals) - t0, 2) if arrivals else None,
        "p50_schedule_s": round(percentile([a - t0 for a in arrivals], 50), 2) if arrivals else None,
    }


def bench_prices(args: argparse.Namespace) -> None:
    r = asyncio.run(_prices_to_schedules(args.sites, args.workers, args.history_days))
    complete = r["published"] >= args.sites
    emit(
        "integration.prices_to_schedules_s",
        round(r["elapsed_s"], 2) if r["elapsed_s"] is not None and complete else None,
        "s",
        target=f"<= {TARGET_PRICES_S:g}",
        reference=f"market.prices_updated from integration-service (markets.octopus job, replay server) -> "
        f"the last of {args.sites:,} schedule.published, production path (integration service + outbox "
        f"relay, trading service + fleet-worker, PostgreSQL, RabbitMQ) on {os.cpu_count()} cores",
        sites=args.sites,
        schedules_published=r["published"],
        worker_processes=args.workers,
        prices_events=r["prices_events"],
        prices_points=r.get("prices_points"),
        prices_source=r.get("prices_source"),
        first_schedule_s=r.get("first_schedule_s"),
        p50_schedule_s=r.get("p50_schedule_s"),
        schedules_before_the_event=r.get("schedules_before_the_event"),
        **({} if complete else {"why": r.get("why", f"only {r['published']} of {args.sites} schedules")}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("webhooks", "prices"))
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=2, help="sender processes of the webhook load")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in all")
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="planning processes (service + fleet-worker)")
    parser.add_argument("--history-days", type=int, default=28)
    args = parser.parse_args()
    _lock = lock_test_servers("bench/integration.py")  # held until the process ends
    if args.only in (None, "webhooks"):
        bench_webhooks(args)
    if args.only in (None, "prices"):
        bench_prices(args)


if __name__ == "__main__":
    main()
