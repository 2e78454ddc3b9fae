"""The job runner: every replica runs one; each due job is claimed by exactly one of them.

A claim is a lease (``lease_s``) renewed while the handler runs; a replica that dies mid-run loses it
and another replica runs the job again after the lease ends (so handlers must be idempotent, which
publishing by version already makes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.aio import raise_if_cancelling, within
from nattery_integration.jobs import repository
from nattery_integration.jobs.registry import JobContext, JobOutcome, JobRegistry, JobResult, JobSpec
from nattery_integration.jobs.schemas import JobView
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 2.0  # at shutdown the lifespan gives the runner's tasks 5 s in all

JOB_RUNS = Counter("nattery_job_runs_total", "Scheduled job runs by outcome", ["job", "outcome"])
JOB_SECONDS = Histogram(
    "nattery_job_run_seconds", "Duration of scheduled job runs", ["job"], buckets=(0.1, 1, 5, 30, 120, 600)
)


def plan_next(
    spec: JobSpec, result: JobResult, *, now: datetime, scheduled_for: datetime, attempt: int
) -> tuple[datetime, datetime, int, JobOutcome]:
    """(next_run_at, scheduled_for, attempt, recorded outcome) after a run ending with ``result``.

    The next regular run is computed from ``now``, so runs missed during downtime collapse into the
    one that just happened. A retry never waits past the next regular run, which then takes over.
    """
    regular = spec.next_run(now)
    if result.outcome is JobOutcome.OK:
        return regular, regular, 0, JobOutcome.OK
    if attempt + 1 >= spec.max_attempts:
        return regular, regular, 0, JobOutcome.FAILED
    if result.outcome is JobOutcome.NOT_YET:
        wait_s = result.retry_in_s if result.retry_in_s is not None else spec.retry_in_s
    else:
        wait_s = (
            result.retry_in_s
            if result.retry_in_s is not None
            else min(spec.failure_retry_s * 2**attempt, 6 * 3600.0)
        )
    retry_at = now + timedelta(seconds=wait_s)
    if retry_at >= regular:
        return regular, regular, 0, result.outcome
    return retry_at, scheduled_for, attempt + 1, result.outcome


class JobRunner:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        registry: JobRegistry,
        *,
        replica: str,
        poll_s: float = 1.0,
        lease_s: float = 300.0,
        max_concurrent: int = 8,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.replica = replica
        self._lease_s = lease_s
        self._max_concurrent = max_concurrent
        self._running: dict[str, asyncio.Task[None]] = {}
        self._rows_ready = False
        # Every poll_s, or at once when poked; a turn that cannot reach PostgreSQL is tried again after
        # poll_s too (a claim is one cheap query), logged once when it starts failing and once after.
        self._turns = RetryLoop(
            self._turn,
            name="job runner",
            logger=log,
            every_s=poll_s,
            backoff=Backoff(initial_s=poll_s, max_s=poll_s),
        )

    def poke(self) -> None:
        self._turns.poke()

    def stop(self) -> None:
        """End :meth:`run` at its next turn, even if a client swallowed the task's cancellation."""
        self._turns.stop()

    async def ensure_rows(self) -> None:
        now = datetime.now(UTC)
        if not self.registry.specs():
            return
        async with self.pool.connection() as conn:
            for spec in self.registry.specs():
                regular = spec.next_run(now)
                await repository.ensure(
                    conn, spec.name, spec.provider, now if spec.run_at_start else regular, regular
                )

    async def _turn(self) -> None:
        if not self._rows_ready:
            await self.ensure_rows()
            self._rows_ready = True
        await self.claim_and_start()

    async def run(self) -> None:
        self._rows_ready = False
        try:
            await self._turns.run()
        finally:
            for task in self._running.values():
                task.cancel()
            if self._running:
                await asyncio.wait(list(self._running.values()), timeout=5)
            await self._release_all()

    async def claim_and_start(self) -> int:
        """Claim due jobs (up to the concurrency limit) and start them; returns how many started."""
        started = 0
        names = [n for n in self.registry.names() if n not in self._running]
        while names and len(self._running) < self._max_concurrent:
            async with self.pool.connection() as conn:
                row = await repository.claim_due(conn, names, self.replica, self._lease_s)
            if row is None:
                break
            spec = self.registry.get(row["name"])
            assert spec is not None
            task = asyncio.create_task(self._run_one(spec, row), name=f"job:{spec.name}")
            self._running[spec.name] = task
            task.add_done_callback(functools.partial(self._done, spec.name))
            names.remove(spec.name)
            started += 1
        return started

    def _done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(name, None)
        self.poke()  # look again at once: the job may be due again (a short retry)

    async def wait_idle(self) -> None:
        """Wait for the runs started so far (tests)."""
        while self._running:
            await asyncio.wait(list(self._running.values()))

    async def _run_one(self, spec: JobSpec, row: dict[str, Any]) -> None:
        ctx = JobContext(
            name=spec.name,
            scheduled_for=row["scheduled_for"],
            started_at=row["started_at"],
            attempt=row["attempt"],
            last_success_at=row["last_success_at"],
            replica=self.replica,
        )
        renewer = asyncio.create_task(self._renew(spec.name), name=f"job-lease:{spec.name}")
        error: str | None = None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            result = await within(spec.handler(ctx), spec.timeout_s)
        except asyncio.CancelledError:
            await self._release(spec.name)
            raise
        except TimeoutError:
            error = f"did not finish within {spec.timeout_s:.0f} s"
            result = JobResult.failed(error)
        except Exception as err:
            raise_if_cancelling()
            log.exception("job %s failed", spec.name)
            error = f"{type(err).__name__}: {err}"[:1000]
            result = JobResult.failed(error)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        JOB_SECONDS.labels(spec.name).observe(loop.time() - t0)
        if result.outcome is JobOutcome.FAILED and error is None:
            error = result.message
        now = datetime.now(UTC)
        next_at, slot, attempt, recorded = plan_next(
            spec, result, now=now, scheduled_for=ctx.scheduled_for, attempt=ctx.attempt
        )
        JOB_RUNS.labels(spec.name, recorded.value).inc()
        try:
            async with self.pool.connection() as conn:
                kept = await repository.finish(
                    conn,
                    spec.name,
                    self.replica,
                    next_run_at=next_at,
                    scheduled_for=slot,
                    attempt=attempt,
                    outcome=recorded.value,
                    message=result.message,
                    error=error,
                )
        except Exception as err:  # the lease runs out and the job runs again (handlers are idempotent)
            raise_if_cancelling()
            log.warning("job %s: cannot record its run (%s): %r", spec.name, recorded.value, err)
            return
        if not kept:
            log.warning("job %s: lease lost while running; another replica took it over", spec.name)
        level = logging.INFO if recorded is not JobOutcome.FAILED else logging.WARNING
        log.log(
            level,
            "job %s: %s %s (next run %s)",
            spec.name,
            recorded.value,
            result.message,
            next_at.isoformat(),
        )

    async def _release(self, name: str) -> None:
        """Hand a run's lease back when this replica stops in the middle of it (shutdown, restart), so
        another replica, or this service's next start, runs the job at once instead of after ``lease_s``
        (a stopped test app left ``markets.octopus`` leased for 300 s: the next app could not run it).
        The run counts as not done: ``next_run_at`` and the slot stay as they were."""
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                async with self.pool.connection() as conn:
                    await repository.release(conn, name, self.replica)
        except Exception as err:  # PostgreSQL unreachable: the lease simply runs out
            log.warning("job %s: cannot release its lease at shutdown: %r", name, err)

    async def _release_all(self) -> None:
        """At shutdown, hand back every lease this replica still holds. A run gives its own back when
        cut (``_release``), but a claim whose task was cancelled before it started, or a release cut by
        a second cancel, would otherwise keep the job from every replica for ``lease_s`` (a lease left
        this way delayed the e2e test's prices by 43 s in a clean-clone run)."""
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                async with self.pool.connection() as conn:
                    released = await repository.release_all(conn, self.replica)
        except Exception as err:  # PostgreSQL unreachable: the leases simply run out
            log.warning("job runner %s: cannot release its leases at shutdown: %r", self.replica, err)
            return
        if released:
            log.info("job runner %s: released the leases of %s at shutdown", self.replica, released)

    async def _renew(self, name: str) -> None:
        """Renew the lease every third of it while the run lasts (cancelled when it ends); a failed
        renewal is tried again at the next third (the lease is long enough), logged once until one works."""

        async def renew() -> None:
            async with self.pool.connection() as conn:
                await repository.renew(conn, name, self.replica, self._lease_s)

        every_s = self._lease_s / 3
        renewals = RetryLoop(
            renew,
            name=f"job {name}: lease renewal",  # one per registered job: a fixed set of names
            logger=log,
            every_s=every_s,
            backoff=Backoff(initial_s=every_s, max_s=every_s),
            wait_first=True,
        )
        await renewals.run()

    async def views(self) -> list[JobView]:
        async with self.pool.connection() as conn:
            rows = await repository.list_all(conn)
        registered = set(self.registry.names())
        return [JobView(**row, registered=row["name"] in registered) for row in rows]
