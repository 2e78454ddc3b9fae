"""Fleet planning over RabbitMQ: a durable quorum work queue with competing consumers.

``trading.fleet_plans`` holds one job per battery (delivery limit, dead-lettered to ``nattery.dlx`` →
``trading.fleet_plans.dlq``); every worker process consumes it with a small prefetch, so adding replicas
(or processes) scales planning out. Results go to ``trading.fleet_results`` (or the job's reply queue).
Workers ack only after the result is confirmed, so a crashed worker's jobs are redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from nattery_trading.fleet.jobs import run_job

JOBS_QUEUE = "trading.fleet_plans"
RESULTS_QUEUE = "trading.fleet_results"
DLX = "nattery.dlx"
DELIVERY_LIMIT = 5


async def declare(
    channel: AbstractChannel, jobs_queue: str = JOBS_QUEUE, results_queue: str = RESULTS_QUEUE
) -> tuple[AbstractQueue, AbstractQueue]:
    dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.TOPIC, durable=True)
    dlq = await channel.declare_queue(f"{jobs_queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, routing_key=jobs_queue)
    jobs = await channel.declare_queue(
        jobs_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": jobs_queue,
        },
    )
    results = await channel.declare_queue(results_queue, durable=True, arguments={"x-queue-type": "quorum"})
    return jobs, results


async def publish_jobs(
    channel: AbstractChannel, bodies: Iterable[bytes], batch: int = 500, jobs_queue: str = JOBS_QUEUE
) -> int:
    """Publish persistent jobs with publisher confirms, ``batch`` in flight at a time."""
    n = 0
    pending: list[asyncio.Future[object]] = []
    for body in bodies:
        msg = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
        )
        pending.append(asyncio.ensure_future(channel.default_exchange.publish(msg, routing_key=jobs_queue)))
        n += 1
        if len(pending) >= batch:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)
    return n


async def worker(
    url: str,
    prefetch: int = 32,
    stop_after_idle_s: float | None = None,
    jobs_queue: str = JOBS_QUEUE,
    results_queue: str = RESULTS_QUEUE,
) -> int:
    """Consume plan jobs until cancelled (or idle for ``stop_after_idle_s``). Returns jobs done."""
    done = 0
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        jobs, _ = await declare(channel, jobs_queue, results_queue)
        last = asyncio.get_running_loop().time()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal done, last
            try:
                result = run_job(message.body)
            except Exception:
                await message.nack(requeue=True)  # the delivery limit dead-letters poison jobs
                return
            await channel.default_exchange.publish(
                aio_pika.Message(
                    result, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
                ),
                routing_key=message.reply_to or results_queue,
            )
            await message.ack()
            done += 1
            last = asyncio.get_running_loop().time()

        tag = await jobs.consume(on_message)
        try:
            while True:
                await asyncio.sleep(0.2)
                if (
                    stop_after_idle_s is not None
                    and asyncio.get_running_loop().time() - last > stop_after_idle_s
                ):
                    break
        finally:
            with contextlib.suppress(Exception):
                await jobs.cancel(tag)
    return done


async def site_plan_worker(worker_name: str | None = None, stop: asyncio.Event | None = None) -> int:
    """One competing consumer of the service's re-plan queue (``trading.site_plans``): plans sites,
    stores their schedules and publishes ``schedule.published``, like a service replica's own worker.
    Runs until ``stop`` is set (or cancelled); returns the jobs it finished."""
    from nattery_shared import db
    from nattery_shared.logging import configure_logging
    from nattery_shared.rabbit import EventBus
    from nattery_trading.app import SCHEMA, build_planning
    from nattery_trading.fleet.site_plans import SitePlanQueue
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


def _worker_process(
    url: str, prefetch: int, idle_s: float, jobs_queue: str, results_queue: str, site_plans: bool = False
) -> None:
    async def both() -> None:
        batch = asyncio.create_task(worker(url, prefetch, idle_s, jobs_queue, results_queue))
        if not site_plans:
            await batch
            return
        await asyncio.gather(batch, site_plan_worker())

    asyncio.run(both())


def start_worker_processes(
    url: str,
    count: int,
    prefetch: int = 32,
    idle_s: float = 5.0,
    jobs_queue: str = JOBS_QUEUE,
    results_queue: str = RESULTS_QUEUE,
    site_plans: bool = False,
) -> list[mp.process.BaseProcess]:
    ctx = mp.get_context("spawn")
    args = (url, prefetch, idle_s, jobs_queue, results_queue, site_plans)
    procs: list[mp.process.BaseProcess] = [
        ctx.Process(target=_worker_process, args=args, daemon=True) for _ in range(count)
    ]
    for p in procs:
        p.start()
    return procs


def fleet_worker(
    processes: int = 0,
    prefetch: int = 32,
) -> None:
    """Run planning workers, one process per core by default. Each process is a competing consumer of
    the service's re-plan queue ``trading.site_plans`` (plans, stores and publishes schedules, like a
    service replica) and of the batch queue ``trading.fleet_plans`` (stateless jobs, results by reply)."""
    import os

    from nattery_trading.settings import get_settings

    url = get_settings().rabbit.url.get_secret_value()
    count = processes or os.cpu_count() or 1
    procs = start_worker_processes(url, count, prefetch=prefetch, idle_s=float("inf"), site_plans=True)
    for p in procs:
        p.join()
