"""Scheduled jobs: one replica per run, catch-up after downtime, retry-until-published, failures recorded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from integration_test_helpers import integration_settings
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from nattery_integration.app import SCHEMA, create_app
from nattery_integration.areas import Area
from nattery_integration.jobs import repository
from nattery_integration.jobs.registry import JobContext, JobOutcome, JobRegistry, JobResult, JobSpec
from nattery_integration.jobs.schedules import daily_at, every
from nattery_integration.jobs.service import JobRunner, plan_next
from nattery_shared import db
from nattery_shared.settings import PostgresSettings
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, bearer, eventually

HOURLY = every(timedelta(hours=1))


@pytest.fixture
async def pools() -> AsyncIterator[list[AsyncConnectionPool]]:
    """Two pools: two replicas' worth of connections."""
    settings = PostgresSettings(dsn=SecretStr(TEST_PG_DSN), pool_min_size=1, pool_max_size=3)
    made = [db.create_pool(settings, schema=SCHEMA, name=f"jobs-test-{i}") for i in range(2)]
    for pool in made:
        await pool.open(wait=True)
    yield made
    for pool in made:
        await pool.close()


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel, and wait a bounded time: a runner that ignores its cancel fails the test, not the session."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=15)


def name() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


async def row_of(pool: AsyncConnectionPool, job: str) -> dict[str, object]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM jobs WHERE name = %s", (job,))
        row = await cur.fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


async def test_two_replicas_run_each_scheduled_run_once(pools: list[AsyncConnectionPool]) -> None:
    runs: list[tuple[str, datetime]] = []
    once: list[str] = []
    frequent, hourly = name(), name()

    async def record(ctx: JobContext) -> JobResult:
        runs.append((ctx.replica, ctx.scheduled_for))
        await asyncio.sleep(0.05)  # long enough for the other replica to look at the same row
        return JobResult.ok()

    async def record_once(ctx: JobContext) -> JobResult:
        once.append(ctx.replica)
        await asyncio.sleep(0.05)
        return JobResult.ok()

    def registry() -> JobRegistry:
        return JobRegistry(
            [
                JobSpec(name=frequent, handler=record, next_run=every(timedelta(milliseconds=150))),
                JobSpec(name=hourly, handler=record_once, next_run=HOURLY),
            ]
        )

    runners = [JobRunner(pool, registry(), replica=f"r{i}", poll_s=0.01) for i, pool in enumerate(pools)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        await eventually(lambda: len(runs) >= 8, timeout_s=20)
    finally:
        await cancel_and_wait(tasks)
    assert all(t.cancelled() for t in tasks), "a runner outlived its cancel() (see pool_cancel.py)"
    slots = [slot for _, slot in runs]
    assert len(slots) == len(set(slots)), f"a slot ran twice: {runs}"
    assert len(once) == 1, once
    assert {replica for replica, _ in runs} <= {"r0", "r1"}


async def test_a_run_missed_during_downtime_runs_once_at_start(pools: list[AsyncConnectionPool]) -> None:
    job = name()
    seen: list[JobContext] = []

    async def handler(ctx: JobContext) -> JobResult:
        seen.append(ctx)
        return JobResult.ok("caught up")

    spec = JobSpec(name=job, handler=handler, next_run=every(timedelta(hours=6)), run_at_start=False)
    runner = JobRunner(pools[0], JobRegistry([spec]), replica="after-downtime", poll_s=0.01)
    await runner.ensure_rows()
    three_days_ago = datetime.now(UTC) - timedelta(days=3)  # 12 regular runs were missed
    async with pools[0].connection() as conn:
        await conn.execute(
            "UPDATE jobs SET next_run_at = %s, scheduled_for = %s WHERE name = %s",
            (three_days_ago, three_days_ago, job),
        )
    await runner.ensure_rows()  # a restart: the missed run stays due
    assert await runner.claim_and_start() == 1
    await runner.wait_idle()
    assert await runner.claim_and_start() == 0
    assert len(seen) == 1
    assert abs((seen[0].scheduled_for - three_days_ago).total_seconds()) < 1e-3
    row = await row_of(pools[0], job)
    assert row["last_outcome"] == "ok" and row["runs"] == 1
    assert row["next_run_at"] > datetime.now(UTC)  # type: ignore[operator]


async def test_not_yet_retries_sooner_until_the_data_appears(pools: list[AsyncConnectionPool]) -> None:
    job = name()
    attempts: list[tuple[int, datetime]] = []

    async def prices(ctx: JobContext) -> JobResult:
        attempts.append((ctx.attempt, ctx.scheduled_for))
        if len(attempts) < 3:
            return JobResult.not_yet("tomorrow's prices are not published yet", retry_in_s=0.05)
        return JobResult.ok("48 prices")

    spec = JobSpec(name=job, handler=prices, next_run=daily_at(time(16, 5), "Europe/London"))
    runner = JobRunner(pools[0], JobRegistry([spec]), replica="r", poll_s=0.01)
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: len(attempts) >= 3, timeout_s=10)
        row = await eventually(lambda: _finished_ok(pools[0], job), timeout_s=5)
    finally:
        await cancel_and_wait([task])
    # This test hung a session once (2026-12-07): its own row_of() gave the runner the pool's connection
    # in the loop iteration of this cancel(), and psycopg_pool lost the cancel (pool_cancel.py).
    assert task.cancelled(), "the runner outlived its cancel()"
    assert [a for a, _ in attempts] == [0, 1, 2]
    assert len({slot for _, slot in attempts}) == 1  # the same slot, retried
    assert row["attempt"] == 0 and row["last_message"] == "48 prices"


async def test_a_run_cut_by_shutdown_is_handed_to_another_replica_at_once(
    pools: list[AsyncConnectionPool],
) -> None:
    """A replica stopped mid-run gives its lease back: another runs the job now, not after the 300 s
    lease (an app stopped by one test left markets.octopus leased, and the next test's app never ran it)."""
    job = name()
    started: list[str] = []
    forever = asyncio.Event()

    async def slow(ctx: JobContext) -> JobResult:
        started.append(ctx.replica)
        await forever.wait()  # never set: the run is cut by the shutdown
        return JobResult.ok()

    def runner(replica: str, pool: AsyncConnectionPool) -> JobRunner:
        spec = JobSpec(name=job, handler=slow, next_run=HOURLY)
        return JobRunner(pool, JobRegistry([spec]), replica=replica, poll_s=0.01, lease_s=300)

    first = asyncio.create_task(runner("stopping", pools[0]).run())
    try:
        await eventually(lambda: started == ["stopping"], timeout_s=10)
    finally:
        await cancel_and_wait([first])
    assert first.cancelled()
    row = await row_of(pools[1], job)
    assert row["lease_until"] is None and row["leased_by"] is None and row["last_outcome"] is None
    # Due at once (the lease would have kept it for 300 s): the run that was cut runs again elsewhere.
    second = asyncio.create_task(runner("taking-over", pools[1]).run())
    try:
        await eventually(lambda: started == ["stopping", "taking-over"], timeout_s=10)
    finally:
        await cancel_and_wait([second])
    assert second.cancelled()


async def test_a_claim_whose_run_never_started_is_given_back_at_shutdown(
    pools: list[AsyncConnectionPool],
) -> None:
    """A lease this replica took but never ran under (its task cancelled before its first step, or
    its own release cut) is handed back when the runner stops, not held for the 300 s lease."""
    job = name()

    runner = JobRunner(pools[0], JobRegistry([]), replica=f"stopping-{job}", poll_s=0.01, lease_s=300)
    async with pools[0].connection() as conn:  # due now, then claimed as a replica does, by it
        await conn.execute(
            "INSERT INTO jobs (name, next_run_at, scheduled_for) VALUES (%s, now(), now())", (job,)
        )
    async with pools[0].connection() as conn:
        assert await repository.claim_due(conn, [job], runner.replica, 300) is not None
    assert (await row_of(pools[1], job))["leased_by"] == runner.replica
    stopping = asyncio.create_task(runner.run())
    await eventually(lambda: runner._rows_ready, timeout_s=10)  # it has made at least one turn
    await cancel_and_wait([stopping])
    assert stopping.cancelled()
    row = await row_of(pools[1], job)
    assert row["lease_until"] is None and row["leased_by"] is None
    # Another replica runs it now.
    ran: list[str] = []

    async def ok(ctx: JobContext) -> JobResult:
        ran.append(ctx.replica)
        return JobResult.ok()

    other = JobRunner(
        pools[1], JobRegistry([JobSpec(name=job, handler=ok, next_run=HOURLY)]), replica="other", poll_s=0.01
    )
    second = asyncio.create_task(other.run())
    try:
        await eventually(lambda: ran == ["other"], timeout_s=10)
    finally:
        await cancel_and_wait([second])


async def _finished_ok(pool: AsyncConnectionPool, job: str) -> dict[str, object] | None:
    row = await row_of(pool, job)
    return row if row["last_outcome"] == "ok" and row["lease_until"] is None else None


async def test_a_failing_job_is_recorded_and_shown(test_issuer: TestIssuer) -> None:
    job = name()

    async def broken(ctx: JobContext) -> JobResult:
        raise RuntimeError("provider answered nonsense")

    area = Area(
        name="test", jobs=lambda ctx: [JobSpec(name=job, handler=broken, next_run=HOURLY, provider="octopus")]
    )
    app = create_app(integration_settings(test_issuer), areas=[area], discover_areas=False)
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://i") as client,
    ):
        headers = bearer(test_issuer, uuid.uuid4(), "viewer")

        async def failed() -> dict[str, object] | None:
            jobs = (await client.get("/jobs", headers=headers)).json()
            return next((j for j in jobs if j["name"] == job and j["last_outcome"] == "failed"), None)

        shown = await eventually(failed, timeout_s=10)
        assert "provider answered nonsense" in shown["last_error"]
        assert shown["registered"] is True and shown["provider"] == "octopus"
        next_run = datetime.fromisoformat(shown["next_run_at"])
        assert next_run - datetime.now(UTC) <= timedelta(seconds=61)  # retried after 60 s, not in an hour
        providers = (await client.get("/providers", headers=headers)).json()
        octopus = next(p for p in providers if p["name"] == "octopus")
        assert job in octopus["jobs"] and octopus["next_run_at"] is not None


def test_a_retry_never_waits_past_the_next_regular_run() -> None:
    spec = JobSpec(name="x", handler=None, next_run=HOURLY, max_attempts=3)  # type: ignore[arg-type]
    now = datetime(2026, 1, 1, 10, 55, tzinfo=UTC)
    slot = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    at, kept_slot, attempt, outcome = plan_next(
        spec, JobResult.not_yet("later", retry_in_s=600), now=now, scheduled_for=slot, attempt=0
    )
    assert at == datetime(2026, 1, 1, 11, 0, tzinfo=UTC) and kept_slot == at and attempt == 0
    at, kept_slot, attempt, _ = plan_next(
        spec, JobResult.not_yet("later", retry_in_s=60), now=now, scheduled_for=slot, attempt=0
    )
    assert at == now + timedelta(seconds=60) and kept_slot == slot and attempt == 1
    _, _, attempt, outcome = plan_next(
        spec, JobResult.not_yet("later", retry_in_s=60), now=now, scheduled_for=slot, attempt=2
    )
    assert outcome is JobOutcome.FAILED and attempt == 0  # out of attempts: recorded failed


def test_schedules() -> None:
    half_hourly = every(timedelta(minutes=30), offset=timedelta(minutes=2))
    assert half_hourly(datetime(2026, 3, 1, 10, 2, tzinfo=UTC)) == datetime(2026, 3, 1, 10, 32, tzinfo=UTC)
    assert half_hourly(datetime(2026, 3, 1, 10, 1, 59, tzinfo=UTC)) == datetime(2026, 3, 1, 10, 2, tzinfo=UTC)
    at_four = daily_at(time(16, 0), "Europe/London")
    # 16:00 London is 16:00Z in winter and 15:00Z in summer
    assert at_four(datetime(2026, 1, 10, 12, tzinfo=UTC)) == datetime(2026, 1, 10, 16, tzinfo=UTC)
    assert at_four(datetime(2026, 7, 10, 15, 30, tzinfo=UTC)) == datetime(2026, 7, 11, 15, tzinfo=UTC)
