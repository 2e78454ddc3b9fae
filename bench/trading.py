"""Trading benchmarks (``make bench-trading``): JSON lines (``bench/common.py``).

- ``trading.solve_ms``: median wall-clock of one 48-slot (24 h x 30 min) plan INCLUDING building the
  model, over 300 planning moments of 2022 (Agile region J, average household, 4 kWp PVGIS PV, 10 kWh /
  5 kW battery, export 15p). Also reported: p95, the share of plans where the one-meter rule needed the
  direction fix (export price above import price), and what an exact MIP costs on those plans.
- ``trading.capture_ratio``: the full 2022 back-test (re-planning every slot; optimiser savings over
  perfect-foresight savings, both against no battery); the figures of summary.json ride along
  (``summary``).
  ``--quick`` skips it.
- ``trading.fleet_replan_s``: the production re-plan of a fleet. 10,000 sites configured in PostgreSQL
  (database ``nattery_bench_trading``, recreated: batteries, a dynamic import tariff on one market, a
  fixed export tariff, 8 days of prices, ``--history-days`` (28) days of half-hourly load/PV actuals for
  the baseline forecasts, a valid schedule each), the real trading service (``python -m nattery_trading``,
  its own worker) and ``nattery-trading fleet-worker --processes N`` on the test RabbitMQ vhost. One
  ``market.prices_updated`` event is published; the figure is the time until the last of the 10,000
  ``schedule.published`` events arrives (consumer -> ``trading.site_plans`` jobs of up to 50 sites ->
  workers: the sites' locks, database reads, forecasts, solves, schedule storage, outbox, publish).
  Beside it: how the jobs spread over the workers, the CPU of every process involved per site, and a
  per-site breakdown (database, forecast, solve, publish, the rest) timed on a sample of sites through
  the same ``PlanningService.run_job`` in jobs of the production size.

    uv run python bench/trading.py [--quick] [--only solve|capture|fleet] [--sites 10000]
        [--workers 1] [--history-days 28]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from common import consumer_count, emit, note, percentile, purge_service_queues

from nattery_trading.backtest.engine import BacktestConfig, run_all
from nattery_trading.backtest.inputs import build_input
from nattery_trading.optimiser import Battery, PlanInput, solve

REPO = Path(__file__).resolve().parents[1]


def bench_solve() -> None:
    data = build_input(2022, 15.0)
    battery = Battery()
    rng = np.random.default_rng(2022)
    starts = rng.choice(len(data) - 48, size=300, replace=False)
    inputs = [
        PlanInput(
            start=data.times[k],
            slot_minutes=30,
            import_price_p_per_kwh=data.import_price[k : k + 48],
            export_price_p_per_kwh=data.export_price[k : k + 48],
            load_kw=data.load_kw[k : k + 48],
            pv_kw=data.pv_kw[k : k + 48],
            initial_soc_pct=float(rng.uniform(10, 100)),
            battery=battery,
            terminal_value_p_per_kwh=float(np.quantile(data.import_price[max(0, k - 336) : k + 1], 0.25)),
        )
        for k in starts
    ]
    for inp in inputs[:10]:  # warm-up (imports, allocator)
        solve(inp)
    times: list[float] = []
    fixed: list[PlanInput] = []
    for inp in inputs:
        t0 = time.perf_counter()
        plan = solve(inp)  # with per-slot reasons, as the service publishes it
        times.append((time.perf_counter() - t0) * 1000)
        if plan.method != "lp":
            fixed.append(inp)
    mip_ms: list[float] = []
    gaps: list[float] = []
    for inp in fixed[:30]:
        fast = solve(inp, explain=False)
        t0 = time.perf_counter()
        exact = solve(inp, explain=False, exact=True)
        mip_ms.append((time.perf_counter() - t0) * 1000)
        gaps.append(fast.objective_p - exact.objective_p)
    emit(
        "trading.solve_ms",
        round(percentile(times, 50), 3),
        "ms",
        target="<= 5",
        reference="1.6 ms highspy direct (T=48, one LP, no reasons) on a 2-vCPU Xeon",
        p95_ms=round(percentile(times, 95), 3),
        plans=len(times),
        share_needing_direction_fix=round(len(fixed) / len(inputs), 3),
        exact_mip_median_ms_on_those=round(statistics.median(mip_ms), 1) if mip_ms else None,
        direction_fix_minus_mip_objective_p_max=round(max(gaps), 3) if gaps else None,
        direction_fix_minus_mip_objective_p_median=round(statistics.median(gaps), 3) if gaps else None,
    )


def bench_capture() -> None:
    data = build_input(2022, 15.0)
    cfg = BacktestConfig()
    summary, _ = run_all(data, cfg, show_progress=sys.stderr.isatty())
    emit(
        "trading.capture_ratio",
        summary["capture_ratio"],
        "ratio",
        target=">= 0.85",
        reference="0.65 for a day-ahead LP with persistence load/PV forecasts (2023 Agile)",
        runtime_s=summary["runtime_s"],
        summary=summary,  # the back-test's summary.json, on the figure's own line
    )


# --- fleet re-plan through the production path ------------------------------------------------------
FLEET_DB = "nattery_bench_trading"


def fleet_database(n: int) -> str:
    """The fleet's database: ``nattery_bench_trading`` for the 10,000 sites of the figure, one of its own
    for another size (a smaller run while iterating keeps the big one for ``--reuse-db``)."""
    return FLEET_DB if n == 10_000 else f"{FLEET_DB}_{n}"


MARKET, REGION = "bench-agile", "J"
SITES_PER_ORG = 100


def _dsn(database: str) -> str:
    from nattery_shared.testing import TEST_PG_DSN

    return TEST_PG_DSN.rsplit("/", 1)[0] + "/" + database


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in _children(k)]


K0 = 48 * 59  # 2022-03-01 in the 2022 Agile series: the bench's prices follow the calendar from there


def _prices_of_next_day(now: datetime) -> tuple[datetime, list[tuple[datetime, float]]]:
    """Tomorrow's prices, as the market publishes them: the event the fleet re-plans on."""
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
    data = build_input(2022, 15.0)
    return now, [
        (day0 + timedelta(days=1, minutes=30 * i), float(data.import_price[K0 + 48 * 9 + i]))
        for i in range(48)
    ]


def setup_fleet_db(
    n: int,
    history_days: int,
    reuse: bool = False,
    *,
    database: str = FLEET_DB,
    market: str = MARKET,
    region: str = REGION,
) -> tuple[datetime, list[tuple[datetime, float]]]:
    """A fresh database with ``n`` configured sites; returns now and the next day's prices (the event).
    ``reuse``: keep the database of the last run when it has ``n`` sites (iterating; its schedules are
    then that run's, valid for 2 h). ``database``, ``market``, ``region``: where, and the market their
    dynamic import tariff follows (bench/integration.py seeds its own fleet on Octopus Agile)."""
    import psycopg

    from nattery_shared import migrations
    from nattery_trading.app import SCHEMA
    from nattery_trading.schedules.service import schedule_id_for

    if reuse:
        with contextlib.suppress(psycopg.Error), psycopg.connect(_dsn(database)) as conn:
            row = conn.execute("SELECT count(*) FROM trading.sites").fetchone()
            if row is not None and row[0] == n:
                # the tree's newer migrations, if any
                migrations.upgrade(
                    REPO / "services/trading/src/nattery_trading/migrations", _dsn(database), SCHEMA
                )
                # not due for the periodic refresh while the bench runs
                conn.execute("UPDATE trading.schedules SET valid_until = now() + interval '2 hours'")
                conn.commit()
                return _prices_of_next_day(datetime.now(UTC))
    with psycopg.connect(_dsn("nattery_test"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    dsn = _dsn(database)
    migrations.upgrade(REPO / "services/trading/src/nattery_trading/migrations", dsn, SCHEMA)

    now, published = _prices_of_next_day(datetime.now(UTC))
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
    data = build_input(2022, 15.0)
    first = day0 - timedelta(days=8)
    known = [(first + timedelta(minutes=30 * i), float(data.import_price[K0 + i])) for i in range(48 * 9)]
    rng = np.random.default_rng(10_000)
    sites = [uuid.uuid4() for _ in range(n)]
    orgs = [uuid.uuid4() for _ in range(-(-n // SITES_PER_ORG))]
    imp_tariffs = {o: uuid.uuid4() for o in orgs}
    exp_tariffs = {o: uuid.uuid4() for o in orgs}
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as conn, conn.cursor() as cur:
        with cur.copy("COPY registered_sites (site_id, org_id, source) FROM STDIN") as copy:
            for i, s in enumerate(sites):
                copy.write_row((s, orgs[i // SITES_PER_ORG], "backfill"))
        with cur.copy(
            "COPY sites (site_id, org_id, timezone, capacity_kwh, max_charge_kw, max_discharge_kw, "
            "export_limit_kw, soc_pct, soc_at) FROM STDIN"
        ) as copy:
            for i, s in enumerate(sites):
                copy.write_row(
                    (
                        s,
                        orgs[i // SITES_PER_ORG],
                        "Europe/London",
                        10.0,
                        5.0,
                        5.0,
                        3.68,
                        rng.uniform(10, 95),
                        now,
                    )
                )
        with cur.copy(
            "COPY tariffs (tariff_id, org_id, name, direction, kind, fixed_p_per_kwh, market, region) FROM STDIN"
        ) as copy:
            for o in orgs:
                copy.write_row((imp_tariffs[o], o, "Agile", "import", "dynamic", None, market, region))
                copy.write_row((exp_tariffs[o], o, "Fixed export", "export", "fixed", 15.0, None, ""))
        with cur.copy("COPY site_tariffs (site_id, direction, tariff_id) FROM STDIN") as copy:
            for i, s in enumerate(sites):
                o = orgs[i // SITES_PER_ORG]
                copy.write_row((s, "import", imp_tariffs[o]))
                copy.write_row((s, "export", exp_tariffs[o]))
        with cur.copy(
            "COPY prices (market, region, direction, start_at, end_at, p_per_kwh, published_at) FROM STDIN"
        ) as copy:
            for t, p in known:
                copy.write_row(
                    (market, region, "import", t, t + timedelta(minutes=30), p, t - timedelta(hours=12))
                )
        # Every site already runs a schedule valid for 2 h (not due for the periodic refresh).
        with cur.copy(
            "COPY schedules (schedule_id, version, org_id, site_id, valid_until, trigger, status, method) "
            "FROM STDIN"
        ) as copy:
            for i, s in enumerate(sites):
                copy.write_row(
                    (
                        schedule_id_for(s),
                        1,
                        orgs[i // SITES_PER_ORG],
                        s,
                        now + timedelta(hours=2),
                        "bench",
                        "Optimal",
                        "lp",
                    )
                )
        # Half-hourly load/PV actuals: an evening peak, noise, and a PV bell (the baseline forecasts' input).
        cur.execute(
            """
            INSERT INTO actuals (site_id, start_at, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw)
            SELECT s.site_id, t, 0, NULL, NULL,
                   0.25 + 0.5 * random() + CASE WHEN extract(hour FROM t) BETWEEN 16 AND 20 THEN 0.8 ELSE 0 END,
                   greatest(0, 3.0 * sin(pi() * (extract(hour FROM t) + extract(minute FROM t) / 60 - 6) / 12))
                   * (0.6 + 0.4 * random())
            FROM sites s
            CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '30 minutes', interval '30 minutes') t
            """,
            (
                day0 - timedelta(days=history_days),
                day0 + timedelta(minutes=30 * (now.hour * 2 + now.minute // 30)),
            ),
        )
        conn.commit()
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return now, published


class TradingProcesses:
    """The trading service (its own worker on) and ``fleet-worker`` processes, against the bench DB."""

    def __init__(
        self, workers: int, queue: str, database: str = FLEET_DB, log_name: str = "bench-trading"
    ) -> None:
        from nattery_shared.testing import free_port, test_env

        self.port = free_port()
        self.queue = queue
        self.workers = workers
        self.env = {
            **os.environ,
            **test_env(),
            "NATTERY_POSTGRES__DSN": _dsn(database),
            "NATTERY_PORT": str(self.port),
            "NATTERY_LOG_LEVEL": "WARNING",
            "NATTERY_TRADING__SITE_PLANS_QUEUE": queue,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_name = log_name

    def start(self) -> None:
        log = (REPO / "var/log").resolve()
        log.mkdir(parents=True, exist_ok=True)
        out = (log / f"{self.log_name}.log").open("ab")
        cmd = [sys.executable, "-m", "nattery_trading"]
        self.procs.append(subprocess.Popen([*cmd, "serve"], env=self.env, stdout=out, stderr=out, cwd=REPO))
        if self.workers > 1:
            self.procs.append(
                subprocess.Popen(
                    [*cmd, "fleet-worker", "--processes", str(self.workers - 1)],
                    env=self.env,
                    stdout=out,
                    stderr=out,
                    cwd=REPO,
                )
            )

    async def wait_ready(self, consumers: Callable[[], Awaitable[int]]) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as http:
            for _ in range(600):
                if any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"a trading process exited (var/log/{self.log_name}.log)")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200 and await consumers() >= self.workers:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"trading did not become ready (var/log/{self.log_name}.log)")

    def pids(self) -> dict[str, list[int]]:
        service = [self.procs[0].pid]
        workers = [c for p in self.procs[1:] for c in [p.pid, *_children(p.pid)]]
        return {"service": service, "fleet_workers": workers}

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


class CpuMeter:
    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.t0 = time.monotonic()
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        out = {g: sum(_proc_cpu_s(p) for p in pids) for g, pids in self.groups.items()}
        stat = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        out["machine"] = sum(int(v) for i, v in enumerate(stat[:8]) if i not in (3, 4)) / os.sysconf(
            "SC_CLK_TCK"
        )
        return out

    def ms_per(self, n: int) -> dict[str, float]:
        """CPU milliseconds per site of each group, the whole machine, and everything else on it."""
        after = self._sample()
        out = {g: round(1000 * (after[g] - self.before[g]) / n, 2) for g in self.before}
        out["other_processes"] = round(out["machine"] - sum(v for g, v in out.items() if g != "machine"), 2)
        return out


async def _fleet_replan(n: int, workers: int, history_days: int, sample: int, reuse: bool) -> dict[str, Any]:
    import aio_pika
    from pydantic import SecretStr

    from nattery_contracts.events import EventType, MarketPricesUpdated, PricePoint, make_event
    from nattery_shared.rabbit import EventBus
    from nattery_shared.settings import RabbitSettings
    from nattery_shared.testing import TEST_RABBIT_URL

    t = time.monotonic()
    database = fleet_database(n)
    _, published = setup_fleet_db(n, history_days, reuse, database=database)
    note(
        "bench-trading",
        f"fleet database: {n} sites, {history_days} days of actuals in {time.monotonic() - t:.0f} s",
    )
    queue_name = f"bench.trading.site_plans.{os.getpid()}"
    procs = TradingProcesses(workers, queue_name, database)
    connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
    bus = EventBus(RabbitSettings(url=SecretStr(TEST_RABBIT_URL)), source="/bench/trading")
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("nattery.events", aio_pika.ExchangeType.TOPIC, durable=True)
        listen = await channel.declare_queue(exclusive=True, auto_delete=True)
        await listen.bind(exchange, routing_key=EventType.SCHEDULE_PUBLISHED.value)
        seen: set[str] = set()
        arrivals: list[float] = []
        done = asyncio.Event()

        async def on_schedule(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            site = json.loads(message.body)["data"]["site_id"]
            if site not in seen:
                seen.add(site)
                arrivals.append(time.monotonic())
                if len(seen) >= n:
                    done.set()

        await listen.consume(on_schedule, no_ack=True)

        async def consumers() -> int:
            return await consumer_count(connection, queue_name)

        procs.start()
        await procs.wait_ready(consumers)
        bus.start()
        await bus.wait_connected(10)
        groups = {
            **procs.pids(),
            "postgres": _pids("postgres"),
            "rabbitmq": _pids("beam.smp"),
            "bench": [os.getpid()],
        }
        await asyncio.sleep(2)  # start-up work (periodic check, connections) out of the window
        meter = CpuMeter(groups)
        event = make_event(
            EventType.MARKET_PRICES_UPDATED,
            MarketPricesUpdated(
                market=MARKET,
                region=REGION,
                direction="import",
                prices=[
                    PricePoint(start=t, end=t + timedelta(minutes=30), price_p_per_kwh=p)
                    for t, p in published
                ],
                published_at=datetime.now(UTC),
            ),
            source="/bench/trading",
        )
        started, started_at = time.monotonic(), datetime.now(UTC)
        await bus.publish(event)
        try:
            await asyncio.wait_for(done.wait(), timeout=1800)
        except TimeoutError:
            note("bench-trading", f"only {len(seen)} of {n} schedules after 1800 s")
        elapsed = time.monotonic() - started
        cpu = meter.ms_per(max(1, len(seen)))
        load = _loadavg()
        enqueued = await _jobs_timeline(started_at, database)
        procs.stop()
        breakdown = await _breakdown(sample, bus, database)
    finally:
        procs.stop()
        await bus.close()
        with contextlib.suppress(Exception):
            ch = await connection.channel()
            for q in (queue_name, f"{queue_name}.dlq"):
                await ch.queue_delete(q)
        with contextlib.suppress(Exception):
            await purge_service_queues(connection)
        await connection.close()
    first = arrivals[0] - started if arrivals else None
    return {
        "elapsed_s": elapsed,
        "published": len(seen),
        "first_schedule_s": round(first, 2) if first is not None else None,
        "p50_schedule_s": round(percentile([a - started for a in arrivals], 50), 2) if arrivals else None,
        "cpu_ms_per_site": cpu,
        "load_average_after": load,
        "jobs": enqueued,
        "per_site_breakdown_ms": breakdown,
    }


async def _jobs_timeline(since: datetime, database: str) -> dict[str, Any]:
    """What plan_jobs recorded since ``since``: how the work spread over the workers."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        _dsn(database), options="-c search_path=trading"
    ) as conn:
        cur = await conn.execute(
            "SELECT worker, count(*), extract(epoch FROM max(published_at) - min(created_at)) "
            "FROM plan_jobs WHERE created_at >= %s GROUP BY worker ORDER BY worker",
            (since,),
        )
        rows = await cur.fetchall()
    return {"per_worker": {str(w): int(c) for w, c, _ in rows}}


async def _breakdown(sample: int, bus: Any, database: str) -> dict[str, float]:
    """Where a site's plan goes: ``PlanningService.run_job`` (the code the workers run) on ``sample``
    sites in jobs of the production size, one job at a time, with the repositories' batch queries (and
    the lock transaction), the forecast, the solve and the outbox flush (publish) timed. Milliseconds
    per site (a job's time divided by its sites; medians over the jobs)."""
    from nattery_shared import db
    from nattery_shared.settings import PostgresSettings
    from nattery_trading.app import SCHEMA
    from nattery_trading.dispatches.repository import DispatchRepository
    from nattery_trading.measured.repository import MeasuredStates
    from nattery_trading.schedules import inputs as plan_inputs
    from nattery_trading.schedules import service as planning_service
    from nattery_trading.schedules.queue import JOB_MAX_SITES, job_key, plan_jobs
    from nattery_trading.schedules.repository import ScheduleRepository
    from nattery_trading.schedules.service import PlanningService
    from nattery_trading.sites.repository import SiteRepository
    from nattery_trading.strategies.repository import StrategyRepository
    from nattery_trading.tariffs.repository import TariffRepository

    pool = db.create_pool(PostgresSettings(dsn=_dsn(database)), schema=SCHEMA, name="bench-breakdown")  # type: ignore[arg-type]
    await db.open_pool(pool)
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def wrapper_async(*a: Any, **kw: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    spent[name] += time.perf_counter() - t

            return wrapper_async

        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    orig_solve, orig_forecast = planning_service.solve, plan_inputs.site_forecast
    planning_service.solve = timed("solve", orig_solve, False)  # type: ignore[assignment]
    plan_inputs.site_forecast = timed("forecast", orig_forecast, False)  # type: ignore[assignment]
    # every repository call of a plan batch (they run on the batch's lock transaction)
    repositories = (
        ScheduleRepository,
        SiteRepository,
        TariffRepository,
        StrategyRepository,
        DispatchRepository,
        MeasuredStates,
    )
    originals = {
        (cls, name): fn
        for cls in repositories
        for name, fn in vars(cls).items()
        if isinstance(fn, staticmethod)
    }
    for (cls, name), fn in originals.items():
        setattr(cls, name, staticmethod(timed("db", fn.__func__, True)))
    try:
        planning = PlanningService(ScheduleRepository(pool), bus)
        locked = planning.repo.locked

        @contextlib.asynccontextmanager
        async def timed_locked(site_ids: Any) -> Any:
            t = time.perf_counter()
            async with locked(site_ids) as conn:
                spent["db"] += time.perf_counter() - t
                yield conn
                t = time.perf_counter()
            spent["db"] += time.perf_counter() - t  # the commit (and the locks' release)

        planning.repo.locked = timed_locked  # type: ignore[method-assign]
        assert planning.relay is not None
        planning.relay.publish_held = timed("publish", planning.relay.publish_held, True)  # type: ignore[method-assign]
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT site_id FROM sites ORDER BY random() LIMIT %s", (sample,))
            sites = [r["site_id"] for r in await cur.fetchall()]
        version = uuid.uuid4().hex
        jobs = plan_jobs([(s, job_key(s, f"breakdown:{version}")) for s in sites], "bench breakdown")
        per_site: dict[str, list[float]] = defaultdict(list)
        for i, job in enumerate(jobs):
            spent.clear()
            t = time.perf_counter()
            await planning.run_job(job)
            total = time.perf_counter() - t
            if i == 0:
                continue  # warm-up
            n = len(job.sites)
            for k in ("db", "forecast", "solve", "publish"):
                per_site[k].append(spent[k] * 1000 / n)
            per_site["other"].append((total - sum(spent.values())) * 1000 / n)
            per_site["total"].append(total * 1000 / n)
    finally:
        planning_service.solve, plan_inputs.site_forecast = orig_solve, orig_forecast  # type: ignore[assignment]
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)
        await pool.close()
    out: dict[str, float] = {k: round(percentile(v, 50), 2) for k, v in per_site.items()}
    out["sites_sampled"] = sum(len(j.sites) for j in jobs[1:])
    out["sites_per_job"] = JOB_MAX_SITES
    return out


def bench_fleet(n: int, workers: int, history_days: int, sample: int, reuse: bool) -> None:
    r = asyncio.run(_fleet_replan(n, workers, history_days, sample, reuse))
    emit(
        "trading.fleet_replan_s",
        round(r["elapsed_s"], 2),
        "s",
        target="<= 60",
        reference=f"one market.prices_updated -> the last of {n:,} schedule.published, production path "
        f"(trading service + fleet-worker, trading.site_plans, PostgreSQL, RabbitMQ) on {os.cpu_count()} cores",
        sites=n,
        schedules_published=r["published"],
        worker_processes=workers,
        worker_layout=f"the service's own worker + fleet-worker --processes {workers - 1}",
        history_days=history_days,
        first_schedule_s=r["first_schedule_s"],
        p50_schedule_s=r["p50_schedule_s"],
        cpu_ms_per_site=r["cpu_ms_per_site"],
        load_average_after=r["load_average_after"],
        jobs=r["jobs"],
        per_site_breakdown_ms=r["per_site_breakdown_ms"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the year-long back-test")
    parser.add_argument("--only", choices=("solve", "capture", "fleet"))
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument(
        "--workers", type=int, default=2, help="planning processes in all (service + fleet-worker)"
    )
    parser.add_argument("--history-days", type=int, default=28)
    parser.add_argument("--breakdown-sites", type=int, default=300)
    parser.add_argument("--reuse-db", action="store_true", help="keep the last run's fleet database")
    args = parser.parse_args()
    if args.only in (None, "solve"):
        bench_solve()
    if args.only == "capture" or (args.only is None and not args.quick):
        bench_capture()
    if args.only in (None, "fleet"):
        from nattery_shared.testing import lock_test_servers

        lock_test_servers("bench/trading.py")  # the fleet step uses the nattery_test vhost
        bench_fleet(args.sites, args.workers, args.history_days, args.breakdown_sites, args.reuse_db)


if __name__ == "__main__":
    main()
