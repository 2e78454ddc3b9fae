"""Trading benchmarks (``make bench-trading``): one JSON object per line.

- ``trading.solve_ms``: median wall-clock of one 48-slot (24 h x 30 min) plan INCLUDING building the
  model, over 300 planning moments of 2022 (Agile region J, average household, 4 kWp PVGIS PV, 10 kWh /
  5 kW battery, export 15p). Also reported: p95, the share of plans where the one-meter rule needed the
  direction fix (export price above import price), and what an exact MIP costs on those plans.
- ``trading.capture_ratio``: the full 2022 back-test (re-planning every slot; optimiser savings over
  perfect-foresight savings, both against no battery); the figures of summary.json are printed too.
  ``--quick`` skips it.
- ``trading.fleet_plan_s``: 10,000 batteries (48-slot plans with per-slot reasons, varied days and
  SOCs) planned through the RabbitMQ work queue (durable quorum queue, publisher confirms, persistent
  messages) by competing worker processes (one per core, started and connected beforehand, as
  deployed replicas are), from the first job published to the last result received.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import numpy as np

from nattery_trading.backtest.engine import BacktestConfig, run_all
from nattery_trading.backtest.inputs import build_input
from nattery_trading.optimiser import Battery, PlanInput, solve


def emit(
    name: str, value: float | None, unit: str, target: float | None, reference: str, **extra: Any
) -> None:
    print(
        json.dumps(
            {"name": name, "value": value, "unit": unit, "target": target, "reference": reference, **extra}
        ),
        flush=True,
    )


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
        round(statistics.median(times), 3),
        "ms",
        5.0,
        "reference: 1.6 ms highspy direct (T=48, one LP, no reasons) on a 2-vCPU Xeon",
        p95_ms=round(float(np.quantile(times, 0.95)), 3),
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
        0.85,
        "reference: 0.65 for a day-ahead LP with persistence load/PV forecasts (2023 Agile)",
        runtime_s=summary["runtime_s"],
    )
    print(json.dumps({"summary": summary}), flush=True)


async def _fleet(n: int, workers: int, per_message: int) -> dict[str, Any]:
    import asyncio
    import os
    import uuid

    import aio_pika

    from nattery_shared.testing import TEST_RABBIT_URL
    from nattery_trading.fleet.jobs import batch, encode_job
    from nattery_trading.fleet.queue import declare, publish_jobs, start_worker_processes

    data = build_input(2022, 15.0)
    rng = np.random.default_rng(10_000)
    starts = rng.integers(0, len(data) - 48, size=n)
    socs = rng.uniform(10, 100, size=n)
    bodies = [
        encode_job(
            uuid.uuid4(),
            uuid.uuid4(),
            PlanInput(
                start=data.times[k],
                slot_minutes=30,
                import_price_p_per_kwh=data.import_price[k : k + 48],
                export_price_p_per_kwh=data.export_price[k : k + 48],
                load_kw=data.load_kw[k : k + 48],
                pv_kw=data.pv_kw[k : k + 48],
                initial_soc_pct=float(socs[i]),
                terminal_value_p_per_kwh=20.0,
            ),
        )
        for i, k in enumerate(starts)
    ]
    suffix = f"bench.{os.getpid()}"
    jobs_q, results_q = f"trading.fleet_plans.{suffix}", f"trading.fleet_results.{suffix}"
    connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        _, results = await declare(channel, jobs_q, results_q)
        procs = start_worker_processes(
            TEST_RABBIT_URL, workers, prefetch=32, idle_s=600.0, jobs_queue=jobs_q, results_queue=results_q
        )
        await asyncio.sleep(6.0)  # workers import numpy/highspy and connect: replicas already running
        received = 0
        done = asyncio.Event()
        solve_ms: list[float] = []

        async def on_result(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            res = json.loads(message.body)
            for r in res if isinstance(res, list) else [res]:
                solve_ms.append(r["solve_ms"])
                received += 1
            await message.ack()
            if received >= n:
                done.set()

        await channel.set_qos(prefetch_count=500)
        tag = await results.consume(on_result)
        t0 = time.perf_counter()
        await publish_jobs(channel, batch(bodies, per_message), jobs_queue=jobs_q)
        t_pub = time.perf_counter() - t0
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(5)
        await results.cancel(tag)
        ch2 = await connection.channel()
        for q in (jobs_q, results_q, f"{jobs_q}.dlq"):
            await ch2.queue_delete(q)
    return {"elapsed": elapsed, "publish_s": t_pub, "median_solve_ms": statistics.median(solve_ms)}


def bench_fleet(n: int = 10_000, per_message: int = 20) -> None:
    """Jobs of ``per_message`` batteries per message (the value); one battery per message as extra."""
    import asyncio
    import os

    workers = os.cpu_count() or 2
    r = asyncio.run(_fleet(n, workers, per_message))
    single = asyncio.run(_fleet(n, workers, 1)) if "--fleet-single" in sys.argv else None
    emit(
        "trading.fleet_plan_s",
        round(r["elapsed"], 2),
        "s",
        30.0,
        "reference: 1,000 batteries in 2.56 s one by one (scipy/HiGHS, no queue, no reasons)",
        batteries=n,
        workers=workers,
        batteries_per_message=per_message,
        publish_s=round(r["publish_s"], 2),
        median_solve_ms_in_workers=round(r["median_solve_ms"], 3),
        one_battery_per_message_s=round(single["elapsed"], 2) if single else None,
    )


def main() -> None:
    """``--quick``: skip the year-long back-test; ``--only NAME``: solve, capture or fleet."""
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    from nattery_shared.testing import lock_test_servers

    lock_test_servers("bench/trading.py")  # the fleet step uses the nattery_test vhost
    if only in (None, "solve"):
        bench_solve()
    if only == "capture" or (only is None and "--quick" not in sys.argv):
        bench_capture()
    if only in (None, "fleet"):
        bench_fleet(int(sys.argv[sys.argv.index("--batteries") + 1]) if "--batteries" in sys.argv else 10_000)


if __name__ == "__main__":
    main()
