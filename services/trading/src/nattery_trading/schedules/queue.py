"""The service's re-plans as jobs on a RabbitMQ work queue with competing consumers.

Whatever makes a site's plan stale (prices, forecasts, dispatches, drift from plan, a strategy change,
an e-stop release, the periodic refresh) enqueues ``PlanJob``s for the affected sites (up to
``JOB_MAX_SITES`` sites a job) on the durable
quorum queue ``trading.site_plans`` (explicit delivery limit, dead-lettered to ``nattery.dlx`` →
``trading.site_plans.dlq``). Every service replica runs one consumer on it and ``nattery-trading
fleet-worker`` processes add more; each job is taken by one of them, which plans its sites, stores the
schedules and publishes ``schedule.published`` (through the outbox). A job is acked only after that (or after it is found
already done), so a crashed worker's job is redelivered.

Each site's ``job_key`` is derived from the site and the version of the input that made it (the triggering
event's id, the dispatch id, the schedule version a periodic refresh replaces, ...): a redelivered or
re-enqueued job carries the same key and publishes nothing new (see ``PlanningService.run_job``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from nattery_contracts.aio import within
from nattery_shared.retry import Backoff, retry_until_ok

log = logging.getLogger(__name__)

SITE_PLANS_QUEUE = "trading.site_plans"
ENQUEUE_IN_FLIGHT = 500
DLX = "nattery.dlx"
# A job plans at most this many sites (one lock transaction and one query per kind of row for all of
# them); below JOB_MIN_SPREAD * JOB_MAX_SITES sites a trigger is cut into JOB_MIN_SPREAD jobs.
JOB_MAX_SITES = 50
JOB_MIN_SPREAD = 16
JOB_NAMESPACE = uuid.UUID("0b6a4f0e-5d7c-4b53-9a3e-6c1f2d8e4a90")


def job_key(site_id: uuid.UUID, input_version: str) -> uuid.UUID:
    """Deterministic key of "plan this site for this input version" (the idempotency key)."""
    return uuid.uuid5(JOB_NAMESPACE, f"{site_id}:{input_version}")


@dataclass(frozen=True)
class PlanJob:
    """Plan these sites for one input version: one message on ``trading.site_plans``.

    A fleet-wide trigger (a price update) is cut into jobs of up to ``JOB_MAX_SITES`` sites: a worker
    then reads, stores and announces many sites with one query each instead of one per site. Each site
    keeps its own job key (the idempotency key stored in ``plan_jobs``)."""

    sites: tuple[tuple[uuid.UUID, uuid.UUID], ...]  # (site_id, job_key)
    trigger: str
    requested_at: datetime

    @classmethod
    def make(cls, site_id: uuid.UUID, trigger: str, input_version: str) -> PlanJob:
        return cls(((site_id, job_key(site_id, input_version)),), trigger, datetime.now(UTC))

    @property
    def site_id(self) -> uuid.UUID:
        """The site of a one-site job (the first site of a larger one)."""
        return self.sites[0][0]

    @property
    def key(self) -> uuid.UUID:
        """The job key of a one-site job (the first site's of a larger one)."""
        return self.sites[0][1]

    @property
    def site_ids(self) -> list[uuid.UUID]:
        return [s for s, _ in self.sites]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "sites": [[str(s), str(k)] for s, k in self.sites],
                "trigger": self.trigger,
                "requested_at": self.requested_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> PlanJob:
        d = json.loads(body)
        if "sites" in d:
            sites = tuple((uuid.UUID(s), uuid.UUID(k)) for s, k in d["sites"])
        else:  # a one-site job enqueued before jobs carried several sites
            sites = ((uuid.UUID(d["site_id"]), uuid.UUID(d["job_key"])),)
        if not sites:
            raise ValueError("a plan job without sites")
        return cls(sites, str(d["trigger"]), datetime.fromisoformat(d["requested_at"]))


def plan_jobs(
    sites: Sequence[tuple[uuid.UUID, uuid.UUID]],
    trigger: str,
    *,
    max_sites: int = JOB_MAX_SITES,
    min_jobs: int = JOB_MIN_SPREAD,
) -> list[PlanJob]:
    """One trigger's (site, job key) pairs cut into jobs: at most ``max_sites`` a job, and a few sites
    spread over at least ``min_jobs`` jobs (so that a handful of sites still reach every competing
    worker at once)."""
    n = len(sites)
    if n == 0:
        return []
    size = max(1, min(max_sites, -(-n // min_jobs)))
    now = datetime.now(UTC)
    return [PlanJob(tuple(sites[i : i + size]), trigger, now) for i in range(0, n, size)]


JobHandler = Callable[[PlanJob], Awaitable[None]]


class SitePlanQueue:
    """Producer and (optionally) competing consumer of ``trading.site_plans`` over its own robust
    connection; connects in the background so the service starts while RabbitMQ is down."""

    def __init__(
        self,
        url: str,
        *,
        queue: str = SITE_PLANS_QUEUE,
        prefetch: int = 2,
        delivery_limit: int = 5,
    ) -> None:
        self.url = url
        self.name = queue
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handler: JobHandler | None = None
        self.taken = 0  # jobs this consumer finished (acked)

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"{self.name}-connect")

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await within(self._connected.wait(), timeout_s)

    async def ping(self) -> None:
        if self._connection is None or self._connection.is_closed or not self._connected.is_set():
            raise ConnectionError(f"not connected to rabbitmq ({self.name})")

    async def _connect_forever(self) -> None:
        await retry_until_ok(
            self._connect_once,
            name=f"rabbitmq connection ({self.name})",
            logger=log,
            backoff=Backoff(initial_s=0.5, max_s=10.0),
            retry_on=(TimeoutError, OSError, aio_pika.exceptions.AMQPError),
        )

    async def _connect_once(self) -> None:
        connection = await aio_pika.connect_robust(self.url, timeout=5)
        channel: AbstractRobustChannel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.prefetch)
        dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.TOPIC, durable=True)
        dlq = await channel.declare_queue(
            f"{self.name}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=self.name)
        self._queue = await channel.declare_queue(
            self.name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": DLX,
                "x-dead-letter-routing-key": self.name,
            },
        )
        self._connection, self._channel = connection, channel
        if self._handler is not None:
            await self._queue.consume(self._on_message)  # the robust channel restores it on reconnect
        self._connected.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._connection is not None:
            await self._connection.close()
        self._connected.clear()

    # --- producer ----------------------------------------------------------------------------------
    async def enqueue(
        self, jobs: Sequence[PlanJob], *, timeout_s: float = 10.0, in_flight: int = ENQUEUE_IN_FLIGHT
    ) -> int:
        """Publish persistent jobs and wait for the broker's confirms (raises when it cannot).

        At most ``in_flight`` unconfirmed at a time, and ``timeout_s`` bounds each group's confirms: a
        fleet-wide price update is 10,000 jobs, whose confirms all at once took longer than any one
        message's timeout while the workers kept the broker busy (bench-trading: the handler timed out,
        the event was redelivered and dead-lettered, and a third of the fleet was never planned)."""
        if not jobs:
            return 0
        await self.wait_connected(timeout_s)
        assert self._channel is not None
        exchange = self._channel.default_exchange
        for i in range(0, len(jobs), in_flight):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            j.encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            content_type="application/json",
                            message_id=str(j.key),
                        ),
                        routing_key=self.name,
                        timeout=timeout_s,
                    )
                    for j in jobs[i : i + in_flight]
                )
            )
        return len(jobs)

    # --- consumer ----------------------------------------------------------------------------------
    async def consume(self, handler: JobHandler) -> None:
        """Become one of the queue's competing consumers."""
        self._handler = handler
        if self._connected.is_set() and self._queue is not None:
            await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        assert self._handler is not None
        try:
            job = PlanJob.decode(message.body)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("malformed plan job dead-lettered: %s", str(err)[:300])
            await message.reject(requeue=False)
            return
        try:
            await self._handler(job)
        except asyncio.CancelledError:
            await message.nack(requeue=True)
            raise
        except Exception:
            # requeued; the quorum queue dead-letters it past x-delivery-limit
            log.exception("plan job %s (%d sites from %s) failed", job.key, len(job.sites), job.site_id)
            await message.nack(requeue=True)
        else:
            await message.ack()
            self.taken += 1
