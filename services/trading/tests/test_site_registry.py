"""Trading learns which org owns each site from device-service's ``device.registered`` (real RabbitMQ and
PostgreSQL): the ``trading.sites`` consumer (idempotent, malformed messages to its DLQ), the registry's
rules, the 0004 backfill, and every site-keyed route refusing another org's site with the 404 an
unknown site gets."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from nattery_contracts.events import CloudEvent
from nattery_shared import migrations
from nattery_shared.errors import NotFound
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import (
    TEST_PG_DSN,
    TEST_RABBIT_URL,
    TestIssuer,
    bearer,
    eventually,
    test_settings_kwargs,
)
from nattery_trading.app import create_app
from nattery_trading.dispatches.repository import DispatchRepository
from nattery_trading.schedules.repository import ScheduleRepository
from nattery_trading.schedules.service import PlanningService
from nattery_trading.settings import TradingSection, TradingSettings
from nattery_trading.sites.consumers import SiteRegistryConsumer
from nattery_trading.sites.repository import Outcome, SiteRegistry, SiteRepository
from nattery_trading.strategies.repository import StrategyRepository
from nattery_trading.tariffs.repository import TariffRepository

pytestmark = pytest.mark.timeout(120)

BATTERY = {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5}
MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "nattery_trading" / "migrations"
MakeEvent = Callable[..., CloudEvent[Any]]


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """A sample of the app's ``/metrics`` (0 when absent)."""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture
async def own_queue_app(
    migrated: None, test_issuer: TestIssuer
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app with its ``device.registered`` consumer on a queue of this test's own, so what lands in
    that queue's DLQ and counts in its metrics is this test's alone."""
    queue = f"tests.trading.sites.{uuid.uuid4().hex[:8]}"
    settings = TradingSettings(
        **test_settings_kwargs(test_issuer), trading=TradingSection(sites_queue=queue, replan_interval_s=3600)
    )
    app = create_app(settings)
    try:
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://trading") as client:
                for _ in range(200):  # the bus declares the consumers' queues once connected (/readyz)
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("trading not ready")
                yield client, queue
    finally:
        conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
        async with conn:
            ch = await conn.channel()
            for q in (queue, f"{queue}.dlq"):
                await ch.queue_delete(q)


async def to_queue(queue: str, body: bytes) -> None:
    """Publish straight into one queue (default exchange), persistent, as the bus publishes events."""
    conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        message = aio_pika.Message(
            body=body,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await ch.default_exchange.publish(message, routing_key=queue)


async def test_device_registered_through_the_broker(
    own_queue_app: tuple[httpx.AsyncClient, str],
    test_issuer: TestIssuer,
    bus: EventBus,
    pool: Any,
    make_device_registered: MakeEvent,
) -> None:
    """Routed from ``nattery.events`` by its type, applied once per event id, never moves a site to
    another org, and malformed messages are dead-lettered and counted."""
    client, queue = own_queue_app
    registry = SiteRegistry(pool)
    org_a, org_b, site = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    # unknown to trading until device-service registers a device on it
    r = await client.put(f"/sites/{site}/battery", headers=bearer(test_issuer, org_a), json=BATTERY)
    assert r.status_code == 404, r.text
    first = make_device_registered(org_a, site)
    await bus.publish(first)  # through nattery.events, routing key device.registered

    async def known() -> bool:
        return await registry.org_of(site) == org_a

    await eventually(known)

    async def handled_here() -> bool:  # by this queue's consumer (as applied, or as a duplicate if another
        # trading.sites consumer on the vhost applied it first)
        ok = await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="ok")
        return ok + await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="duplicate") >= 1

    await eventually(handled_here)
    r = await client.put(f"/sites/{site}/battery", headers=bearer(test_issuer, org_a), json=BATTERY)
    assert r.status_code == 200, r.text

    # the same event delivered twice (here straight into the queue: these ids reach no other queue)
    ok = await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="ok")
    dup = await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="duplicate")
    second = make_device_registered(org_a, site)  # another device of the same site
    await to_queue(queue, second.model_dump_json().encode())

    async def ok_count() -> float:
        n = await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="ok")
        return n if n >= ok + 1 else 0.0

    assert await eventually(ok_count) == ok + 1
    await to_queue(queue, second.model_dump_json().encode())

    async def dup_count() -> float:
        n = await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="duplicate")
        return n if n >= dup + 1 else 0.0

    assert await eventually(dup_count) == dup + 1
    assert await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="ok") == ok + 1
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT queue FROM processed_events WHERE event_id = %s", (second.id,))
        assert [row["queue"] for row in await cur.fetchall()] == [queue]
        cur = await conn.execute("SELECT * FROM registered_sites WHERE site_id = %s", (site,))
        rows = await cur.fetchall()
    assert len(rows) == 1 and rows[0]["org_id"] == org_a and rows[0]["source"] == "event"
    assert rows[0]["event_id"] == first.id  # the first event that announced the site

    # another org's event for the same site changes nothing
    conflicts = await metric(client, "nattery_trading_site_registrations_total", outcome="conflict")
    await to_queue(queue, make_device_registered(org_b, site).model_dump_json().encode())

    async def conflict_counted() -> bool:
        n = await metric(client, "nattery_trading_site_registrations_total", outcome="conflict")
        return n == conflicts + 1

    await eventually(conflict_counted)
    assert await registry.org_of(site) == org_a
    r = await client.put(f"/sites/{site}/battery", headers=bearer(test_issuer, org_b), json=BATTERY)
    assert r.status_code == 404, r.text

    # malformed: not JSON; and a device.registered whose data lacks org_id → the DLQ at once, counted
    other = uuid.uuid4()
    bad = make_device_registered(org_b, other).model_dump(mode="json")
    del bad["data"]["org_id"]
    bodies = [b"not a cloud event", json.dumps(bad).encode()]
    for body in bodies:
        await to_queue(queue, body)
    conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
    async with conn:
        ch = await conn.channel()
        dlq = await ch.declare_queue(f"{queue}.dlq", passive=True)
        dead: list[bytes] = []

        async def both_dead() -> bool:
            while (m := await dlq.get(fail=False)) is not None:
                dead.append(m.body)
                await m.ack()
            return len(dead) >= 2

        await eventually(both_dead)
    assert sorted(dead) == sorted(bodies)
    assert await metric(client, "nattery_amqp_messages_total", queue=queue, outcome="malformed") == 2
    assert await registry.org_of(other) is None


async def test_registry_rules(pool: Any, make_device_registered: MakeEvent) -> None:
    """Concurrent redeliveries apply once; an event-registered site never changes org; a backfilled
    site (configured before 0004) is confirmed, or corrected to the org device-service announces."""
    registry = SiteRegistry(pool)
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    site = uuid.uuid4()
    event = make_device_registered(org_a, site)
    got = await asyncio.gather(
        *(registry.record(event_id=event.id, queue="q", site_id=site, org_id=org_a) for _ in range(4))
    )
    assert sorted(g.outcome for g in got) == sorted([Outcome.NEW] + [Outcome.DUPLICATE] * 3)
    again = await registry.record(event_id=uuid.uuid4(), queue="q", site_id=site, org_id=org_a)
    assert again.outcome is Outcome.KNOWN
    stolen = await registry.record(event_id=uuid.uuid4(), queue="q", site_id=site, org_id=org_b)
    assert stolen.outcome is Outcome.CONFLICT and stolen.org_id == org_a
    assert await registry.org_of(site) == org_a

    confirmed, corrected = uuid.uuid4(), uuid.uuid4()
    async with pool.connection() as conn:
        for s in (confirmed, corrected):  # what 0004's backfill writes for a site configured by org B
            await conn.execute(
                "INSERT INTO registered_sites (site_id, org_id, source) VALUES (%s, %s, 'backfill')",
                (s, org_b),
            )
    got_confirmed = await registry.record(event_id=uuid.uuid4(), queue="q", site_id=confirmed, org_id=org_b)
    assert got_confirmed.outcome is Outcome.CONFIRMED and await registry.org_of(confirmed) == org_b
    got_corrected = await registry.record(event_id=uuid.uuid4(), queue="q", site_id=corrected, org_id=org_a)
    assert got_corrected.outcome is Outcome.CORRECTED and got_corrected.previous_org_id == org_b
    assert await registry.org_of(corrected) == org_a
    # once backed by an event, the org is fixed
    back = await registry.record(event_id=uuid.uuid4(), queue="q", site_id=corrected, org_id=org_b)
    assert back.outcome is Outcome.CONFLICT and await registry.org_of(corrected) == org_a


async def test_corrected_backfill_locks_the_claimant_out(
    client: httpx.AsyncClient, test_issuer: TestIssuer, pool: Any, make_device_registered: MakeEvent
) -> None:
    """A site org B configured before trading checked sites (a backfilled claim) that device-service
    registers to org A: org B loses it at once, trading stops planning org B's configuration, and org A
    is told an operator must remove the old rows."""
    org_a, org_b, site = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    repo = ScheduleRepository(pool)
    tariff = await TariffRepository(pool).create(
        org_b, {"name": "flat", "direction": "import", "kind": "fixed", "fixed_p_per_kwh": 20}
    )
    async with pool.connection() as conn:  # the state 0004 leaves for a claim made before it
        await conn.execute(
            "INSERT INTO sites (site_id, org_id, capacity_kwh, max_charge_kw, max_discharge_kw) "
            "VALUES (%s, %s, 10, 5, 5)",
            (site, org_b),
        )
        await conn.execute(
            "INSERT INTO registered_sites (site_id, org_id, source) VALUES (%s, %s, 'backfill')",
            (site, org_b),
        )
    await TariffRepository(pool).assign(site, "import", tariff.tariff_id)
    far = datetime.now(UTC) + timedelta(days=3650)
    # the backfill keeps an existing configuration working: served and planned
    r = await client.get(f"/sites/{site}/strategy", headers=bearer(test_issuer, org_b, "viewer"))
    assert r.status_code == 200, r.text
    assert site in [s for s, _ in await repo.sites_due(far)] and site in await SiteRepository(pool).of_org(
        org_b
    )

    await SiteRegistryConsumer(SiteRegistry(pool)).on_device_registered(make_device_registered(org_a, site))
    r = await client.get(f"/sites/{site}/strategy", headers=bearer(test_issuer, org_b, "viewer"))
    assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "site_not_registered"}
    assert site not in [s for s, _ in await repo.sites_due(far)] and site not in await SiteRepository(
        pool
    ).of_org(org_b)
    with pytest.raises(NotFound):
        await PlanningService(repo, None).plan_site(site, "a job queued for org B's configuration")
    assert await repo.latest_schedule(site) is None
    r = await client.put(f"/sites/{site}/battery", headers=bearer(test_issuer, org_a), json=BATTERY)
    assert r.status_code == 404 and "operator must remove" in r.json()["error"]["message"], r.text
    async with pool.connection() as conn:  # nothing moved between orgs, nothing deleted
        cur = await conn.execute("SELECT org_id FROM sites WHERE site_id = %s", (site,))
        assert [row["org_id"] for row in await cur.fetchall()] == [org_b]


def this_slot() -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=30 if now.minute >= 30 else 0, second=0, microsecond=0)


# Every route keyed by a site, with the call that succeeds for the site's own org (in this order, each
# building on the previous). A new site-keyed route must be added here (checked against the OpenAPI).
def site_calls(tariff_id: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    start = this_slot()
    return [
        ("PUT", "/sites/{site_id}/battery", {}, BATTERY),
        ("PUT", "/sites/{site_id}/tariffs/{direction}", {"tariff_id": tariff_id}, None),
        ("PUT", "/sites/{site_id}/strategy", {}, {"kind": "arbitrage", "reserve_soc_pct": 20}),
        ("GET", "/sites/{site_id}/strategy", {}, None),
        ("POST", "/sites/{site_id}/plan", {}, None),
        ("GET", "/sites/{site_id}/schedule", {}, None),
        # (no SOC: a SOC off the plan would enqueue a re-plan, and a version landing mid-test)
        ("POST", "/sites/{site_id}/actuals", {}, [{"start_at": start.isoformat(), "battery_power_kw": 1.0}]),
        (
            "GET",
            "/sites/{site_id}/schedule/compare",
            {
                "from": (start - timedelta(hours=1)).isoformat(),
                "to": (start + timedelta(hours=2)).isoformat(),
            },
            None,
        ),
    ]


async def test_every_site_route_refuses_another_orgs_site(
    client: httpx.AsyncClient,
    settings: TradingSettings,
    test_issuer: TestIssuer,
    pool: Any,
    register_site: Any,
) -> None:
    """A site registered to org A: org A's calls succeed; org B's admin (every role allowed) gets on every
    site-keyed route — with org B's own tariff where one is needed — the same 404 as for a site nobody
    registered, and nothing of org A's changes."""
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    site = await register_site(pool, org_a)
    unknown = uuid.uuid4()
    tariffs = {}
    for org in (org_a, org_b):
        r = await client.post(
            "/tariffs",
            headers=bearer(test_issuer, org),
            json={"name": "flat", "direction": "import", "kind": "fixed", "fixed_p_per_kwh": 20},
        )
        assert r.status_code == 201, r.text
        tariffs[org] = r.json()["tariff_id"]

    site_routes = {
        (method.upper(), path)
        for path, ops in create_app(settings).openapi()["paths"].items()
        for method in ops
        if "{site_id}" in path
    }
    assert site_routes == {(m, p) for m, p, _, _ in site_calls(tariffs[org_a])}, (
        "a site route has no case here"
    )

    def url(path: str, site_id: uuid.UUID) -> str:
        return path.replace("{site_id}", str(site_id)).replace("{direction}", "import")

    for method, path, query, body in site_calls(tariffs[org_a]):
        r = await client.request(
            method, url(path, site), headers=bearer(test_issuer, org_a), params=query, json=body
        )
        assert r.is_success, f"org A {method} {path}: {r.status_code} {r.text}"

    repo = ScheduleRepository(pool)
    sites, strategies = SiteRepository(pool), StrategyRepository(pool)
    before = (await sites.get(site), await repo.latest_schedule(site), await strategies.get(site))
    for method, path, query, body in site_calls(tariffs[org_b]):
        answers = []
        for target in (site, unknown):
            r = await client.request(
                method, url(path, target), headers=bearer(test_issuer, org_b), params=query, json=body
            )
            assert r.status_code == 404, f"org B {method} {path} on {target}: {r.status_code} {r.text}"
            error = r.json()["error"]
            assert error["code"] == "not_found" and error["details"] == {"reason": "site_not_registered"}
            answers.append(error["message"].replace(str(target), "{site}"))
        assert answers[0] == answers[1], f"{method} {path}: org A's site answers unlike an unknown one"

    # the emergency stop names its site in the body
    for target in (site, unknown):
        r = await client.post(
            "/emergency-stops",
            headers=bearer(test_issuer, org_b, "operator"),
            json={"site_id": str(target), "reason": "not mine"},
        )
        assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "site_not_registered"}
    assert await DispatchRepository(pool).stops(org_b, True) == []
    assert (
        await sites.get(site),
        await repo.latest_schedule(site),
        await strategies.get(site),
    ) == before
    r = await client.post(
        "/emergency-stops",
        headers=bearer(test_issuer, org_a, "operator"),
        json={"site_id": str(site), "reason": "mine"},
    )
    assert r.status_code == 201, r.text
    r = await client.delete(
        f"/emergency-stops/{r.json()['stop_id']}", headers=bearer(test_issuer, org_a, "operator")
    )
    assert r.status_code == 200, r.text


def test_0004_backfills_sites_configured_before_it() -> None:
    """On a database at 0003 with configured sites, 0004 registers each to the org that configured it."""
    schema = f"trading_mig_{uuid.uuid4().hex[:8]}"
    site, org = uuid.uuid4(), uuid.uuid4()
    try:
        migrations.upgrade(MIGRATIONS, TEST_PG_DSN, schema, revision="0003")
        with psycopg.connect(TEST_PG_DSN) as conn:
            conn.execute(
                f'INSERT INTO "{schema}".sites (site_id, org_id, capacity_kwh, max_charge_kw, max_discharge_kw) '
                "VALUES (%s, %s, 10, 5, 5)",
                (site, org),
            )
        migrations.upgrade(MIGRATIONS, TEST_PG_DSN, schema)
        with psycopg.connect(TEST_PG_DSN) as conn:
            rows = conn.execute(
                f'SELECT site_id, org_id, source, event_id FROM "{schema}".registered_sites'
            ).fetchall()
        assert rows == [(site, org, "backfill", None)]
    finally:
        with psycopg.connect(TEST_PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
