"""``nattery-trading fleet-worker``: extra competing consumers of the service's re-plan queue.

Each process is one consumer of ``trading.site_plans`` (``queue.py``) exactly as a service
replica's own worker is: it plans a site, stores the schedule and publishes ``schedule.published``. Adding
processes (or hosts) scales re-planning out; ``bench/trading.py`` measures the fleet re-plan through the
service and these processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal


async def site_plan_worker(worker_name: str | None = None, stop: asyncio.Event | None = None) -> int:
    """One competing consumer of the service's re-plan queue (``trading.site_plans``): plans sites,
    stores their schedules and publishes ``schedule.published``, like a service replica's own worker.
    Runs until ``stop`` is set (or cancelled); returns the jobs it finished."""
    from nattery_shared import db
    from nattery_shared.logging import configure_logging
    from nattery_shared.rabbit import EventBus
    from nattery_trading.app import SCHEMA, build_planning
    from nattery_trading.schedules.queue import SitePlanQueue
    from nattery_trading.settings import get_settings

    settings = get_settings()
    configure_logging(settings.service_name, settings.log_level)
    pool = db.create_pool(settings.postgres, schema=SCHEMA, name=f"{settings.service_name}-fleet-worker")
    await db.open_pool(pool)
    bus = EventBus(settings.rabbit, source=f"/services/{settings.service_name}")
    bus.start()
    queue = SitePlanQueue(
        settings.rabbit.url.get_secret_value(),
        queue=settings.trading.site_plans_queue,
        prefetch=settings.trading.worker_prefetch,
        delivery_limit=settings.rabbit.delivery_limit,
    )
    queue.start()
    try:
        planning = build_planning(settings, pool, bus, queue, worker_name)
        await queue.consume(planning.run_job)
        await (stop or asyncio.Event()).wait()
    finally:
        await queue.close()
        await bus.close()
        await pool.close()
    return queue.taken


def _worker_process() -> None:
    # The event loop the service itself runs on (uvicorn picks uvloop when installed): a worker's job
    # is mostly PostgreSQL and RabbitMQ round trips, which uvloop's loop serves with less CPU.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it on Linux
        asyncio.run(site_plan_worker())
    else:
        uvloop.run(site_plan_worker())


def start_worker_processes(count: int) -> list[mp.process.BaseProcess]:
    ctx = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = [
        ctx.Process(target=_worker_process, daemon=True) for _ in range(count)
    ]
    for p in procs:
        p.start()
    return procs


def fleet_worker(processes: int = 0) -> None:
    """Run re-plan workers: ``processes`` competing consumers of ``trading.site_plans`` (default one
    per core), each planning, storing and publishing like a service replica's own worker."""
    procs = start_worker_processes(processes or os.cpu_count() or 1)

    def stop(signum: int, _frame: object) -> None:
        # SIGTERM ends this process without its atexit hooks: the workers would be left running
        # (orphans that kept consuming CPU after bench-trading stopped its fleet-worker)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.join()
