"""Re-plans through the ``trading.site_plans`` work queue (real RabbitMQ and PostgreSQL): competing
workers, job-key idempotency, emergency stop (immediate hold, jobs dropped), drift, dispatch statuses,
baseline forecasts from recorded actuals."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest
from asgi_lifespan import LifespanManager

from nattery_contracts.events import (
    CloudEvent,
    EventType,
    ForecastPoint,
    ForecastUpdated,
    MarketPricesUpdated,
    PricePoint,
    make_event,
)
from nattery_shared.rabbit import EventBus, QueueSpec, event_source
from nattery_shared.testing import TEST_RABBIT_URL, TestIssuer, bearer, eventually, test_settings_kwargs
from nattery_trading.app import build_planning, create_app
from nattery_trading.dispatches.repository import DispatchRepository
from nattery_trading.dispatches.service import DispatchService
from nattery_trading.schedules.queue import PlanJob, SitePlanQueue, job_key
from nattery_trading.schedules.repository import ScheduleRepository
from nattery_trading.schedules.service import PlanningService
from nattery_trading.settings import TradingSection, TradingSettings
from nattery_trading.sites.repository import SiteRepository
from nattery_trading.tariffs.repository import TariffRepository

pytestmark = pytest.mark.timeout(90)

BATTERY = {
    "timezone": "Europe/London",
    "capacity_kwh": 10,
    "max_charge_kw": 5,
    "max_discharge_kw": 5,
    "charge_efficiency": 0.95,
    "discharge_efficiency": 0.95,
    "soc_min_pct": 10,
    "soc_max_pct": 100,
    "degradation_p_per_kwh": 2,
    "import_limit_kw": None,
    "export_limit_kw": None,
}


def now_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


AddSite = Callable[..., Awaitable[uuid.UUID]]


@pytest.fixture
def add_site(pool: Any, register_site: Any) -> AddSite:
    """``await add_site(org, market=None, region="")``: a site registered to ``org`` (as device-service's
    ``device.registered`` makes it), its battery configured, an import tariff (time-of-use, or dynamic on
    ``market``)."""

    async def add(org: uuid.UUID, *, market: str | None = None, region: str = "") -> uuid.UUID:
        return await _add_site(pool, await register_site(pool, org), org, market, region)

    return add


async def _add_site(pool: Any, site: uuid.UUID, org: uuid.UUID, market: str | None, region: str) -> uuid.UUID:
    assert await SiteRepository(pool).upsert(org, site, BATTERY) is not None
    if market is not None:
        t = {"name": "agile", "direction": "import", "kind": "dynamic", "market": market, "region": region}
    else:
        t = {
            "name": "tou",
            "direction": "import",
            "kind": "time_of_use",
            "rates": [
                {"start_local": "00:30", "end_local": "07:30", "p_per_kwh": 9.0},
                {"start_local": "07:30", "end_local": "00:30", "p_per_kwh": 32.0},
            ],
        }
    tariff = await TariffRepository(pool).create(org, t)
    await TariffRepository(pool).assign(site, "import", tariff.tariff_id)
    return site


class Collector:
    """Every event of some types about some sites, from a throw-away queue on the test vhost."""

    def __init__(self, bus: EventBus, types: list[str]) -> None:
        self.bus = bus
        self.types = types
        self.sites: set[str] = set()
        self.events: list[CloudEvent[Any]] = []

    async def start(self) -> None:
        async def collect(ev: CloudEvent[Any]) -> None:
            if ev.subject in self.sites:
                self.events.append(ev)

        await self.bus.consume(QueueSpec(f"tests.trading.{uuid.uuid4().hex[:8]}", self.types), collect)

    def of(self, type_: str, site: uuid.UUID | None = None) -> list[CloudEvent[Any]]:
        return [e for e in self.events if e.type == type_ and (site is None or e.subject == str(site))]


async def drop_queue(name: str) -> None:
    conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        for q in (name, f"{name}.dlq"):
            await ch.queue_delete(q)


async def test_prices_for_three_sites_fan_out_to_competing_workers(
    migrated: None, test_issuer: TestIssuer, pool: Any, bus: EventBus, add_site: AddSite
) -> None:
    """prices for 3 sites → 3 jobs on one quorum queue → 2 competing workers (the service's own and a
    fleet worker) → 3 schedule.published events; both workers took jobs."""
    queue_name = f"tests.site_plans.{uuid.uuid4().hex[:8]}"
    settings = TradingSettings(
        **test_settings_kwargs(test_issuer),
        trading=TradingSection(site_plans_queue=queue_name, worker_prefetch=1, replan_interval_s=3600),
    )
    repo = ScheduleRepository(pool)
    org, market, region = uuid.uuid4(), "test-market", f"R{uuid.uuid4().hex[:8]}"
    collector = Collector(bus, ["schedule.published"])
    await collector.start()

    # a second competing consumer, as `nattery-trading fleet-worker` runs it
    second_q = SitePlanQueue(TEST_RABBIT_URL, queue=queue_name, prefetch=1)
    second_q.start()
    second = build_planning(settings, pool, bus, second_q, worker_name="fleet-worker-2")
    await second_q.consume(second.run_job)
    await second_q.wait_connected(10)
    app = create_app(settings)
    try:
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
            conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
            async with conn:
                ch = await conn.channel()

                async def two_consumers() -> bool:
                    probe = await conn.channel()  # a fresh channel: aio-pika caches declarations
                    q = await probe.declare_queue(queue_name, passive=True)
                    await probe.close()
                    return q.declaration_result.consumer_count == 2

                await eventually(two_consumers)  # one shared queue, two competing consumers
                # declaring it as anything but this quorum queue would be refused (PRECONDITION_FAILED)
                await ch.declare_queue(
                    queue_name,
                    durable=True,
                    arguments={
                        "x-queue-type": "quorum",
                        "x-delivery-limit": settings.rabbit.delivery_limit,
                        "x-dead-letter-exchange": "nattery.dlx",
                        "x-dead-letter-routing-key": queue_name,
                    },
                )
            # Sites are added once the app is up: its start-up periodic re-plan has then already
            # looked for due sites, so every job below comes from the prices event.
            sites = [await add_site(org, market=market, region=region) for _ in range(3)]
            collector.sites = {str(s) for s in sites}
            start = now_hour()
            points = [
                PricePoint(
                    start=start + timedelta(minutes=30 * i),
                    end=start + timedelta(minutes=30 * (i + 1)),
                    price_p_per_kwh=(-2.0 if 4 <= i < 8 else 30.0),
                )
                for i in range(-48, 48)
            ]
            prices = make_event(
                EventType.MARKET_PRICES_UPDATED,
                MarketPricesUpdated(
                    market=market, region=region, direction="import", prices=points, published_at=start
                ),
                source="/tests",
            )
            await bus.publish(prices)
            got = await eventually(lambda: asyncio.sleep(0, len(collector.of("schedule.published")) >= 3))
            assert got
            assert {e.subject for e in collector.of("schedule.published")} == {str(s) for s in sites}
            async with pool.connection() as c:
                cur = await c.execute(
                    "SELECT worker, count(*) AS n FROM plan_jobs WHERE site_id = ANY(%s) GROUP BY worker",
                    (sites,),
                )
                workers = {r["worker"]: r["n"] for r in await cur.fetchall()}
            assert sum(workers.values()) == 3
            assert len(workers) == 2 and "fleet-worker-2" in workers, workers  # both took jobs

            # the same event redelivered (or re-enqueued) → same job keys → no second version
            for s in sites:
                await second.run_job(PlanJob.make(s, "prices again", f"event:{prices.id}"))
            # Sentinel: a job under a new key, run after the redeliveries, plans version 2 of one site;
            # once its announcement is in, any announcement from the redeliveries would be too.
            await second.run_job(PlanJob.make(sites[0], "sentinel", f"sentinel:{prices.id}"))
            published = await eventually(
                lambda: asyncio.sleep(
                    0, len(collector.of("schedule.published")) >= 4 and collector.of("schedule.published")
                )
            )
            assert [e.data.version for e in published] == [1, 1, 1, 2], published
            for s in sites:
                latest = await repo.latest_schedule(s)
                assert latest is not None and latest.head.version == (2 if s == sites[0] else 1)
    finally:
        await second_q.close()
        await drop_queue(queue_name)


async def test_job_keys_make_jobs_idempotent_and_reannounce_unconfirmed(
    pool: Any, bus: EventBus, add_site: AddSite
) -> None:
    repo = ScheduleRepository(pool)
    org = uuid.uuid4()
    site = await add_site(org)
    collector = Collector(bus, ["schedule.published"])
    collector.sites = {str(site)}
    await collector.start()
    planning = PlanningService(repo, bus)  # no queue: jobs run here, as a worker runs them
    job = PlanJob.make(site, "forecast updated", "event:abc")
    await planning.run_job(job)
    await planning.run_job(job)  # redelivered
    first = await eventually(lambda: asyncio.sleep(0, collector.of("schedule.published")))
    assert first[0].data.version == 1

    # stored but the announcement never confirmed (crash): the redelivery re-announces the same version
    # under the same event id instead of planning again
    async with pool.connection() as c:
        await c.execute("UPDATE plan_jobs SET published_at = NULL WHERE job_key = %s", (job.key,))
    await planning.run_job(job)
    await eventually(lambda: asyncio.sleep(0, len(collector.of("schedule.published")) == 2))
    again = collector.of("schedule.published")[1]
    assert again.id == first[0].id and again.data.version == 1
    latest = await repo.latest_schedule(site)
    assert latest is not None and latest.head.version == 1
    done = await repo.plan_job(job.key)
    assert done is not None and done.published_at is not None
    # Sentinel: a new job key plans version 2; once it is announced, the redelivered job (run before
    # it) would have announced a second version too, had it planned again.
    await planning.run_job(PlanJob.make(site, "sentinel", "event:sentinel"))
    published = await eventually(
        lambda: asyncio.sleep(
            0, len(collector.of("schedule.published")) >= 3 and collector.of("schedule.published")
        )
    )
    assert [(e.id == first[0].id, e.data.version) for e in published] == [(True, 1), (True, 1), (False, 2)]


async def test_emergency_stop_holds_at_once_and_drops_jobs_until_released(
    pool: Any, bus: EventBus, register_site: Any, add_site: AddSite
) -> None:
    repo = ScheduleRepository(pool)
    org = uuid.uuid4()
    site = await add_site(org)
    collector = Collector(bus, ["schedule.published"])
    collector.sites = {str(site)}
    await collector.start()
    # a queue nobody consumes: the hold must not wait for a worker
    queue_name = f"tests.site_plans.{uuid.uuid4().hex[:8]}"
    queue = SitePlanQueue(TEST_RABBIT_URL, queue=queue_name)
    queue.start()
    await queue.wait_connected(10)
    try:
        planning = PlanningService(repo, bus, queue=queue)
        stops = DispatchService(DispatchRepository(pool), planning)
        await planning.plan_site(site, "setup")
        stop = await stops.emergency_stop(org, site, "fire drill", "tests")
        latest = await repo.latest_schedule(site)
        assert latest is not None and latest.head.method == "hold" and latest.head.version == 2

        def hold_events() -> list[CloudEvent[Any]]:
            return [
                e
                for e in collector.of("schedule.published")
                if e.data.slots
                and all(s.mode.value == "hold" and s.battery_power_w == 0 for s in e.data.slots)
            ]

        held = await eventually(lambda: asyncio.sleep(0, hold_events()), timeout_s=5)
        assert held[0].data.version == 2
        assert held[0].data.valid_until > datetime.now(UTC) + timedelta(hours=1)

        # jobs for a stopped, held site are dropped: prices, forecasts, drift, a manual plan
        worker = PlanningService(repo, bus)
        await worker.run_job(PlanJob.make(site, "prices updated", "event:1"))
        assert await worker.plan_site(site, "requested") is None
        latest = await repo.latest_schedule(site)
        assert latest is not None and latest.head.version == 2
        # when the hold is about to expire, a (periodic) job renews the hold, never a trading schedule
        later = datetime.now(UTC) + timedelta(hours=1, minutes=30)
        assert await worker.replan_due(later) >= 1
        latest = await repo.latest_schedule(site)
        assert latest is not None and latest.head.version == 3 and latest.head.method == "hold"
        assert all(s.battery_power_kw == 0 for s in latest.slots)

        # a site with no tariff or prices yet is held all the same
        bare = await register_site(pool, org)
        assert await SiteRepository(pool).upsert(org, bare, BATTERY) is not None
        await stops.emergency_stop(org, bare, "no tariff yet", "tests")
        bare_latest = await repo.latest_schedule(bare)
        assert bare_latest is not None and bare_latest.head.method == "hold"

        # released → a re-plan job goes on the queue; a worker makes a trading schedule again
        await stops.release_stop(org, stop.stop_id, "tests")
        conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            msg = await ch.declare_queue(queue_name, passive=True)
            m = await eventually(lambda: msg.get(fail=False))
            job = PlanJob.decode(m.body)
            await m.ack()
        assert job.site_id == site and job.trigger == "emergency stop released"
        await worker.run_job(job)
        latest = await repo.latest_schedule(site)
        assert latest is not None and latest.head.method != "hold" and latest.head.version == 4
    finally:
        await queue.close()
        await drop_queue(queue_name)


async def test_dispatch_executed_is_published_when_its_window_ends(
    pool: Any, bus: EventBus, add_site: AddSite
) -> None:
    repo = ScheduleRepository(pool)
    org = uuid.uuid4()
    site = await add_site(org)
    collector = Collector(bus, ["dispatch.status_changed"])
    collector.sites = {str(site)}
    await collector.start()
    planning = PlanningService(repo, bus)
    now = datetime.now(UTC)
    dispatch_id = uuid.uuid4()
    await DispatchRepository(pool).insert(
        {
            "dispatch_id": dispatch_id,
            "org_id": org,
            "site_id": site,
            "provider": "axle",
            "battery_power_kw": 2.0,
            "start_at": now - timedelta(hours=2),
            "end_at": now - timedelta(hours=1),
            "status": "accepted",
            "reason": None,
        }
    )
    await planning.replan_due(now)
    got = await eventually(lambda: asyncio.sleep(0, collector.of("dispatch.status_changed")))
    assert got[0].data.dispatch_id == dispatch_id and got[0].data.status.value == "executed"
    assert got[0].source == event_source("trading")


async def test_drift_from_plan_enqueues_a_replan(
    client: httpx.AsyncClient, test_issuer: TestIssuer, pool: Any, bus: EventBus, add_site: AddSite
) -> None:
    """The service's own worker runs the job the drift enqueued (default queue)."""
    org = uuid.uuid4()
    site = await add_site(org)
    operator, viewer = bearer(test_issuer, org, "operator"), bearer(test_issuer, org, "viewer")
    # the app's start-up periodic tick may have enqueued this new (schedule-less) site: mark that job
    # done so it cannot land a version between the reports below
    async with pool.connection() as c:
        await c.execute(
            "INSERT INTO plan_jobs (job_key, site_id, schedule_id, version, trigger, worker, published_at) "
            "VALUES (%s, %s, %s, 0, 'periodic re-plan', 'tests', now()) ON CONFLICT DO NOTHING",
            (job_key(site, "periodic:v0"), site, uuid.uuid4()),
        )
    r = await client.post(f"/sites/{site}/plan", headers=operator)
    assert r.status_code == 200, r.text
    plan = r.json()
    slot = plan["slots"][0]

    async def latest() -> dict[str, Any]:
        r = await client.get(f"/sites/{site}/schedule", headers=viewer)
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body

    async def drift_versions() -> list[int]:
        # (the app's periodic tick may re-plan the new site too: count only drift re-plans)
        async with pool.connection() as c:
            cur = await c.execute(
                "SELECT version FROM schedules WHERE site_id = %s AND trigger LIKE 'drift:%%' ORDER BY version",
                (site,),
            )
            return [r["version"] for r in await cur.fetchall()]

    # within the threshold (10 points): no re-plan
    near = min(100.0, slot["soc_pct"] + 5.0)
    r = await client.post(
        f"/sites/{site}/actuals",
        headers=operator,
        json=[{"start_at": slot["start_at"], "battery_power_kw": 0.0, "soc_pct": near}],
    )
    assert r.status_code == 204, r.text
    # (no re-plan may come of it: the drift re-plan below, queued after it, must be the first one)

    # 30 points off: re-planned through the queue, from the measured SOC
    far = slot["soc_pct"] + 30.0 if slot["soc_pct"] < 60 else slot["soc_pct"] - 30.0
    for _ in range(2):  # reported twice: one job (same slot, same schedule version)
        r = await client.post(
            f"/sites/{site}/actuals",
            headers=operator,
            json=[{"start_at": slot["start_at"], "battery_power_kw": 0.0, "soc_pct": far}],
        )
        assert r.status_code == 204, r.text

    got = await eventually(drift_versions)
    assert got == [plan["version"] + 1]
    s = await latest()
    assert s["version"] == got[0] and s["trigger"].startswith(f"drift: SOC {far:.1f}%")
    # Sentinel: a forecast event queues one more re-plan behind the second report's job; once that
    # version exists, a second drift re-plan would have been stored before it.
    now = datetime.now(UTC)
    t0 = now.replace(minute=0 if now.minute < 30 else 30, second=0, microsecond=0)
    points = [
        ForecastPoint(
            start=t0 + timedelta(minutes=30 * i),
            end=t0 + timedelta(minutes=30 * (i + 1)),
            load_kw=0.9,
            pv_kw=0.0,
        )
        for i in range(4)
    ]
    forecast = ForecastUpdated(org_id=org, site_id=site, model="sentinel", points=points)
    await bus.publish(make_event(EventType.FORECAST_UPDATED, forecast, source="/tests"))

    async def sentinel_planned() -> bool:
        return str((await latest())["trigger"]).startswith("forecast updated (sentinel)")

    await eventually(sentinel_planned)
    assert await drift_versions() == got


async def test_baseline_forecast_from_recorded_actuals(
    client: httpx.AsyncClient, test_issuer: TestIssuer, pool: Any, bus: EventBus, add_site: AddSite
) -> None:
    org = uuid.uuid4()
    site = await add_site(org)
    operator, viewer = bearer(test_issuer, org, "operator"), bearer(test_issuer, org, "viewer")

    # no history at all: flat load, no PV, and the schedule says so
    r = await client.post(f"/sites/{site}/plan", headers=operator)
    assert r.status_code == 200, r.text
    fc = r.json()["forecast"]
    assert fc["load"]["source"] == "flat" and fc["pv"]["source"] == "flat"
    assert "no history" in fc["summary"]

    # 8 days of actuals: load 2 kW in the evening (17-21 UTC) else 0.3 kW; PV 3 kW around noon
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=8)
    rows = []
    for i in range(8 * 48):
        t = start + timedelta(minutes=30 * i)
        rows.append(
            {
                "start_at": t.isoformat(),
                "battery_power_kw": 0.0,
                "load_kw": 2.0 if 17 <= t.hour < 21 else 0.3,
                "pv_kw": 3.0 if 10 <= t.hour < 14 else 0.0,
            }
        )
    r = await client.post(f"/sites/{site}/actuals", headers=operator, json=rows)
    assert r.status_code == 204, r.text
    r = await client.post(f"/sites/{site}/plan", headers=operator)
    assert r.status_code == 200, r.text
    out = r.json()
    fc = out["forecast"]
    assert fc["load"]["source"] == "baseline" and fc["pv"]["source"] == "baseline"
    assert fc["load"]["history_days"] >= 7.9 and "SameSlotLastWeeks" in fc["load"]["baseline"]
    # the plan was made on that profile: grid = load - pv - battery per slot
    for s in out["slots"][:48]:
        t = datetime.fromisoformat(s["start_at"])
        load = 2.0 if 17 <= t.hour < 21 else 0.3
        pv = 3.0 if 10 <= t.hour < 14 else 0.0
        assert s["grid_kw"] == pytest.approx(load - pv - s["battery_power_kw"], abs=1e-3), s

    # a provided forecast wins where it covers, the baseline fills the rest
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    t0 = now.replace(minute=0 if now.minute < 30 else 30)
    event = make_event(
        EventType.FORECAST_UPDATED,
        ForecastUpdated(
            org_id=org,
            site_id=site,
            model="analytics-test",
            points=[
                ForecastPoint(
                    start=t0 + timedelta(minutes=30 * i),
                    end=t0 + timedelta(minutes=30 * (i + 1)),
                    load_kw=1.1,
                    pv_kw=0.0,
                )
                for i in range(4)
            ],
        ),
        source="/tests",
    )
    await bus.publish(event)

    async def with_provided() -> dict[str, Any] | None:
        r = await client.get(f"/sites/{site}/schedule", headers=viewer)
        s: dict[str, Any] = r.json()
        return s if "forecast updated" in s["trigger"] else None

    got = await eventually(with_provided)
    assert got["forecast"]["load"]["source"] == "provided+baseline"
    assert got["forecast"]["load"]["models"] == ["analytics-test"]
    assert "forecast.updated (analytics-test)" in got["forecast"]["summary"]

    # A PV-only forecast (integration's) and then a load-only one (analytics') for the same slots: neither
    # overwrites what the other said, so the plan sees the PV of the first and the load of the second.
    async def publish_and_wait(model: str, load_kw: float | None, pv_kw: float | None) -> dict[str, Any]:
        points = [
            ForecastPoint(
                start=t0 + timedelta(minutes=30 * i),
                end=t0 + timedelta(minutes=30 * (i + 1)),
                load_kw=load_kw,
                pv_kw=pv_kw,
            )
            for i in range(4)
        ]
        data = ForecastUpdated(org_id=org, site_id=site, model=model, points=points)
        await bus.publish(make_event(EventType.FORECAST_UPDATED, data, source="/tests"))

        async def planned() -> dict[str, Any] | None:
            r = await client.get(f"/sites/{site}/schedule", headers=viewer)
            s: dict[str, Any] = r.json()
            return s if model in s["forecast"]["summary"] else None

        return await eventually(planned)

    await publish_and_wait("pv-only-test", None, 2.5)
    both = await publish_and_wait("load-only-test", 0.7, None)
    covered = [
        s
        for s in both["slots"]
        if t0 + timedelta(minutes=30) <= datetime.fromisoformat(s["start_at"]) < t0 + timedelta(hours=2)
    ]
    assert len(covered) >= 3
    for s in covered:
        assert s["grid_kw"] == pytest.approx(0.7 - 2.5 - s["battery_power_kw"], abs=1e-3), s
