"""Jobs of many sites and the transactional outbox (real PostgreSQL and RabbitMQ): a job plans each of
its sites once, a site that cannot be planned does not keep the others from it, and an announcement
that could not be published when its version was stored is published later by the relay, under the id
its job key gives it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from nattery_contracts.events import CloudEvent, EventType
from nattery_shared.rabbit import EventBus, QueueSpec, event_source
from nattery_shared.settings import RabbitSettings
from nattery_shared.testing import eventually
from nattery_trading.outbox import OutboxRelay
from nattery_trading.schedules.queue import JOB_MAX_SITES, PlanJob, job_key, plan_jobs
from nattery_trading.schedules.repository import ScheduleRepository
from nattery_trading.schedules.service import EVENT_NAMESPACE, PlanningService
from nattery_trading.sites.repository import SiteRepository
from nattery_trading.tariffs.repository import TariffRepository

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
TOU = {
    "name": "tou",
    "direction": "import",
    "kind": "time_of_use",
    "rates": [
        {"start_local": "00:30", "end_local": "07:30", "p_per_kwh": 9.0},
        {"start_local": "07:30", "end_local": "00:30", "p_per_kwh": 32.0},
    ],
}


async def _sites(
    pool: Any, register_site: Any, org: uuid.UUID, n: int, *, tariff: bool = True
) -> list[uuid.UUID]:
    tariffs = TariffRepository(pool)
    t = await tariffs.create(org, TOU)
    out = []
    for _ in range(n):
        site = await register_site(pool, org)
        assert await SiteRepository(pool).upsert(org, site, BATTERY) is not None
        if tariff:
            await tariffs.assign(site, "import", t.tariff_id)
        out.append(site)
    return out


def test_jobs_carry_many_sites_and_spread_a_few() -> None:
    sites = [uuid.uuid4() for _ in range(1000)]
    jobs = plan_jobs([(s, job_key(s, "event:x")) for s in sites], "prices")
    assert len(jobs) == 1000 // JOB_MAX_SITES and all(len(j.sites) == JOB_MAX_SITES for j in jobs)
    assert [s for j in jobs for s in j.site_ids] == sites
    few = plan_jobs([(s, job_key(s, "event:x")) for s in sites[:3]], "prices")
    assert [len(j.sites) for j in few] == [1, 1, 1]  # three sites still reach three workers
    again = PlanJob.decode(jobs[0].encode())
    assert again.sites == jobs[0].sites and again.trigger == "prices"
    # a one-site job enqueued before jobs carried several sites
    old = b'{"site_id": "%s", "trigger": "t", "job_key": "%s", "requested_at": "2026-12-07T00:00:00+00:00"}'
    legacy = PlanJob.decode(old % (str(sites[0]).encode(), str(jobs[0].key).encode()))
    assert legacy.site_id == sites[0] and legacy.key == jobs[0].key


async def test_a_job_plans_each_site_once_and_a_bad_site_does_not_stop_the_others(
    pool: Any, register_site: Any
) -> None:
    org = uuid.uuid4()
    good = await _sites(pool, register_site, org, 4)
    (no_tariff,) = await _sites(pool, register_site, org, 1, tariff=False)
    unknown = uuid.uuid4()
    planning = PlanningService(ScheduleRepository(pool), None)
    keyed = [(s, job_key(s, "event:batch")) for s in [*good[:2], no_tariff, unknown, *good[2:]]]
    outcomes = await planning.plan_sites(keyed, "batch")
    repo = ScheduleRepository(pool)
    for site, outcome in zip([s for s, _ in keyed], outcomes, strict=True):
        latest = await repo.latest_schedule(site)
        if site in good:
            assert outcome is not None and not isinstance(outcome, Exception)
            assert latest is not None and latest.head.version == 1 and outcome.head == latest.head
            assert len(latest.slots) == 72 and latest.head.forecast["initial_state"]["source"] == "assumed"
        else:
            assert isinstance(outcome, Exception) and latest is None
    # the same job again (redelivered): nothing new
    assert await planning.plan_sites(keyed[:2], "batch") == [None, None]
    for s in good:
        latest = await repo.latest_schedule(s)
        assert latest is not None and latest.head.version == 1


async def test_an_announcement_that_could_not_be_published_is_published_by_the_relay(
    pool: Any, register_site: Any, bus: EventBus
) -> None:
    org = uuid.uuid4()
    (site,) = await _sites(pool, register_site, org, 1)
    got: list[CloudEvent[Any]] = []

    async def collect(ev: CloudEvent[Any]) -> None:
        if ev.subject == str(site):
            got.append(ev)

    await bus.consume(QueueSpec(f"tests.trading.{uuid.uuid4().hex[:8]}", ["schedule.published"]), collect)
    # a bus that never connects: the version is stored, its publish fails (a crash after the commit)
    down = EventBus(RabbitSettings(url="amqp://nobody:nothing@127.0.0.1:1/"), source="/tests")  # type: ignore[arg-type]
    planning = PlanningService(ScheduleRepository(pool), down)
    assert planning.relay is not None
    planning.relay.publish_held = _failing  # type: ignore[method-assign]
    key = job_key(site, "event:outbox")
    stored = await planning.plan_site(site, "outbox", key=key)
    assert stored is not None and stored.head.version == 1
    job = await ScheduleRepository(pool).plan_job(key)
    assert job is not None and job.published_at is not None  # announced: the outbox holds it

    # the relay of any process publishes it
    await OutboxRelay(pool, bus).flush()
    events = await eventually(lambda: asyncio.sleep(0, got))
    assert events[0].type == EventType.SCHEDULE_PUBLISHED
    assert events[0].id == uuid.uuid5(EVENT_NAMESPACE, str(key)) and events[0].data.version == 1
    assert events[0].data.valid_until > datetime.now(UTC)
    assert events[0].source == event_source("trading")  # the kit's convention: /services/trading


async def _failing(*_: Any) -> int:
    raise ConnectionError("rabbitmq down")
