# ruff: noqa: F811  (the fixtures imported from market_fixtures are parameters of the tests)
"""Market sources through the whole service, beyond their parsers:

- an ENTSO-E site (EUR tariff) through both services: an org's ENTSO-E connection makes the
  ``markets.entsoe`` job fetch the day-ahead prices from the replay server, the outbox relay publishes
  ``market.prices_updated`` (EUR/MWh), and the trading service, a real process on its own port, plans the
  site in euro cents per kWh from exactly those prices;
- Modo NIV: an org's Modo connection (API key encrypted at rest) makes the ``markets.modo_niv`` job fetch
  NIV from the replay with that key and publish one ``niv.updated`` per settled period, once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, DeviceRegistered, EventType, make_event
from nattery_integration.app import create_app
from nattery_integration.markets import entsoe
from nattery_integration.markets.service import MarketsService, entsoe_days
from nattery_integration.replay import bodies
from nattery_integration.replay.runner import ReplayServer
from nattery_integration.settings import ProviderSettings
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_shared.testing import TestIssuer, bearer, eventually, free_port, test_env

sys.path.insert(0, str(Path(__file__).parent))
from integration_test_helpers import integration_settings
from market_fixtures import Published, pool, published, replay  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PROVIDERS = ("octopus", "elexon", "modo", "entsoe", "open_meteo")
HALF_HOUR = timedelta(minutes=30)  # trading's plan slot


@asynccontextmanager
async def integration(replay: ReplayServer, issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    """The integration service in process, every provider on the replay server."""
    providers = {p: ProviderSettings(base_url=replay.base_url(p) + "/") for p in PROVIDERS}
    # Modo's real limit is about one call a minute; the replay has none (the limit is tested elsewhere)
    providers["modo"] = ProviderSettings(
        base_url=replay.base_url("modo") + "/", rate_limit_requests=1000, rate_limit_per_s=1
    )
    app = create_app(integration_settings(issuer, **providers))
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://i") as client,
    ):
        yield client


async def make_due(pool: AsyncConnectionPool, job: str) -> bool:
    """Run ``job`` now rather than at its next slot (True once its row exists)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE jobs SET next_run_at = now() WHERE name = %s AND lease_until IS NULL", (job,)
        )
        return cur.rowcount > 0


async def job_view(client: httpx.AsyncClient, issuer: TestIssuer, job: str) -> dict[str, Any]:
    jobs = (await client.get("/jobs", headers=bearer(issuer, uuid.uuid4(), "viewer"))).json()
    found: dict[str, Any] = next(j for j in jobs if j["name"] == job)
    return found


# --- ENTSO-E through integration and trading -------------------------------------------------------
@pytest.fixture
def trading(test_issuer: TestIssuer, tmp_path: Path) -> Iterator[str]:
    """The trading service as a real process (``python -m nattery_trading serve``); yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        **test_env(test_issuer),
        "NATTERY_PORT": str(port),
        # a work queue of its own: jobs left in the shared one by another session do not delay this test
        "NATTERY_TRADING__SITE_PLANS_QUEUE": f"tests.integration.site_plans.{uuid.uuid4().hex[:8]}",
    }
    log = tmp_path / "trading.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nattery_trading", "serve"], env=env, stdout=out, stderr=out
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"trading log ({log}):\n{log.read_text()[-4000:]}")  # shown when the test fails


async def test_an_entsoe_site_is_planned_in_eur_from_what_integration_published(
    replay: ReplayServer, pool: AsyncConnectionPool, test_issuer: TestIssuer, trading: str
) -> None:
    org, site = uuid.uuid4(), uuid.uuid4()
    admin = bearer(test_issuer, org, "admin")
    # A bidding zone of this test only (any EIC; the replay serves it, in Brussels time like most of
    # the EU): no price set an earlier test stored for it, no other org's connection to it.
    zone = eic = entsoe.zone_eic(f"10Y{uuid.uuid4().hex[:12].upper()}X")
    settings = integration_settings(test_issuer)
    bus = EventBus(settings.rabbit, source="/tests/integration")
    bus.start()
    await bus.wait_connected(10)
    prices_events: list[CloudEvent[Any]] = []

    async def collect(event: CloudEvent[Any]) -> None:
        if event.data.market == "entsoe-day-ahead" and event.data.region == eic:
            prices_events.append(event)

    queue = f"tests.integration.entsoe.{uuid.uuid4().hex[:8]}"
    await bus.consume(QueueSpec(queue, ["market.prices_updated"]), collect)
    try:
        async with httpx.AsyncClient(base_url=trading, timeout=10) as t:

            async def ready() -> bool:  # its consumers' queues are declared once it is ready
                try:
                    return (await t.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout_s=60)
            # Trading learns the site from device-service's event, then an admin configures it in EUR.
            await bus.publish(
                make_event(
                    EventType.DEVICE_REGISTERED,
                    DeviceRegistered(
                        org_id=org,
                        site_id=site,
                        device_id=uuid.uuid4(),
                        site_slug=f"site-{site.hex[:8]}",
                        device_slug="inv1",
                        kind="inverter",
                    ),
                    source="/services/device",
                )
            )

            async def battery() -> httpx.Response | None:
                r = await t.put(
                    f"/sites/{site}/battery",
                    headers=admin,
                    json={
                        "capacity_kwh": 10,
                        "max_charge_kw": 5,
                        "max_discharge_kw": 5,
                        "timezone": "Europe/Amsterdam",
                    },
                )
                return r if r.status_code != 404 else None

            assert (await eventually(battery)).status_code == 200
            r = await t.post(
                "/tariffs",
                headers=admin,
                json={
                    "name": "day-ahead",
                    "direction": "import",
                    "kind": "dynamic",
                    "market": "entsoe-day-ahead",
                    "region": eic,
                    "currency": "EUR",
                },
            )
            assert r.status_code == 201, r.text
            r = await t.put(
                f"/sites/{site}/tariffs/import", headers=admin, params={"tariff_id": r.json()["tariff_id"]}
            )
            assert r.status_code == 204, r.text

            # The org's ENTSO-E connection; its price job fetches the zone's day-ahead from the replay.
            async with integration(replay, test_issuer) as i:
                r = await i.post(
                    "/connections",
                    headers=admin,
                    json={
                        "provider": "entsoe",
                        "name": "day-ahead",
                        "settings": {"bidding_zone": zone},
                        "secrets": {"security_token": f"token-{org.hex[:8]}"},
                    },
                )
                assert r.status_code == 201, r.text
                await eventually(lambda: make_due(pool, "markets.entsoe"), timeout_s=10)
                # One event per delivery day the job fetches (today, and tomorrow once published):
                # a plan made on the first alone may fill the later hours with estimates.
                days = entsoe_days(datetime.now(UTC), eic)
                await eventually(lambda: len(prices_events) >= len(days), timeout_s=30)
                event = prices_events[0]

                def published_slots() -> dict[datetime, float]:
                    """Each 30-minute slot the published quarter-hours cover: their time-weighted mean."""
                    points = {p.start: p for e in prices_events for p in e.data.prices}  # a re-run's once
                    value: dict[datetime, float] = defaultdict(float)
                    covered: dict[datetime, float] = defaultdict(float)
                    for p in points.values():
                        at, end = p.start.astimezone(UTC), p.end.astimezone(UTC)
                        while at < end:
                            slot = at.replace(minute=at.minute // 30 * 30, second=0, microsecond=0)
                            part = (min(end, slot + HALF_HOUR) - at).total_seconds()
                            value[slot] += p.price_p_per_kwh * part
                            covered[slot] += part
                            at = min(end, slot + HALF_HOUR)
                    full = HALF_HOUR.total_seconds()
                    return {slot: value[slot] / full for slot, c in covered.items() if c == full}

                async def plan() -> dict[str, Any] | None:
                    # The plan made on every price published so far: every slot the published prices
                    # cover is priced at their mean (an earlier plan's estimates do not count).
                    r = await t.get(f"/sites/{site}/schedule", headers=admin)
                    if r.status_code != 200:
                        return None
                    body: dict[str, Any] = r.json()
                    prices = published_slots()
                    starts = {datetime.fromisoformat(s["start_at"]) for s in body["slots"]}
                    first, last = min(starts), max(starts)
                    if not {s for s in prices if first <= s <= last} <= starts:
                        return None
                    priced = all(
                        s["import_p_per_kwh"] == pytest.approx(prices[datetime.fromisoformat(s["start_at"])])
                        for s in body["slots"]
                        if datetime.fromisoformat(s["start_at"]) in prices
                    )
                    return body if priced else None

                schedule = await eventually(plan, timeout_s=60)
                assert replay.state.credentials["entsoe"][f"token-{org.hex[:8]}"] >= 1  # its own token
    finally:
        await bus.close()

    # What integration published: the replay's EUR/MWh prices, carried with their currency and unit.
    assert (event.data.currency, event.data.unit, event.data.direction) == ("EUR", "EUR/MWh", "import")
    points = [p for e in prices_events for p in e.data.prices]
    assert points and all(p.price_p_per_kwh == pytest.approx(p.price / 10) for p in points)  # cents/kWh
    # What trading planned: each 30-minute slot the published prices cover is priced at the mean of its
    # two quarter-hours (the ENTSO-E day-ahead's 15-minute prices), in euro cents.
    assert {p.end - p.start for p in points} == {timedelta(minutes=15)}
    prices = published_slots()
    slots = [s for s in schedule["slots"] if datetime.fromisoformat(s["start_at"]) in prices]
    assert len(slots) >= 8, schedule["slots"][:4]
    for s in slots:
        assert s["import_p_per_kwh"] == pytest.approx(prices[datetime.fromisoformat(s["start_at"])])
    assert "prices" in schedule["trigger"], schedule["trigger"]


# --- Modo NIV ---------------------------------------------------------------------------------------
async def test_modo_niv_job_uses_a_key_modo_accepts_and_publishes_each_period_once(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published, test_issuer: TestIssuer
) -> None:
    # Two orgs' Modo connections: the first one listed (lowest org id) has a key Modo has revoked.
    revoked_org = uuid.UUID(f"00000000-0000-4000-8000-{uuid.uuid4().hex[:12]}")
    org = uuid.uuid4()
    revoked, key = f"modo-revoked-{uuid.uuid4().hex[:8]}", f"modo-{uuid.uuid4().hex[:12]}"
    replay.state.modo_keys = {key}
    now = datetime.now(UTC)
    replay.state.now = lambda: now  # the periods settled by now, whenever the job asks
    days = MarketsService(pool).niv_days()
    expected = {
        (r["date"], r["settlement_period"]): r["niv"]
        for d in days
        for r in bodies.modo_niv(d, d, now)["results"]
    }
    assert expected  # at least one settled period (GB's first ends at 00:30 local)
    async with pool.connection() as conn:
        # Modo NIV an earlier test's app may have stored (its markets.modo_niv job ran against its own
        # replay): this test checks what a first fetch publishes, then that a second one adds nothing.
        await conn.execute("DELETE FROM niv_periods WHERE source = 'modo'")
        since = (await (await conn.execute("SELECT now() AS t")).fetchone())["t"]  # type: ignore[index]

    async with integration(replay, test_issuer) as i:
        for owner, secret in ((revoked_org, revoked), (org, key)):
            r = await i.post(
                "/connections",
                headers=bearer(test_issuer, owner, "admin"),
                json={"provider": "modo", "name": "modo", "secrets": {"token": secret}},
            )
            assert r.status_code == 201, r.text
            assert secret not in r.text  # masked
        await eventually(lambda: make_due(pool, "markets.modo_niv"), timeout_s=10)

        def modo_events() -> list[CloudEvent[Any]]:
            return published.of("niv.updated", "modo/")

        events = await eventually(lambda: len(modo_events()) >= len(expected) and modo_events(), timeout_s=30)
        got = {(e.data.settlement_date, e.data.settlement_period): e.data.niv_mwh for e in events}
        assert got == expected
        assert all(e.data.source == "modo" for e in events)
        # The revoked key was refused, the job went on to the next org's, decrypted from its connection.
        assert replay.state.credentials["modo"][revoked] >= 1 and replay.state.credentials["modo"][key] >= 1

        async def ran_ok(runs_before: int) -> dict[str, Any] | None:
            view = await job_view(i, test_issuer, "markets.modo_niv")
            return view if view["last_outcome"] == "ok" and view["runs"] > runs_before else None

        first = await eventually(lambda: ran_ok(0), timeout_s=10)
        # Again: the same periods, unchanged, are not published again (nothing more in the outbox).
        await eventually(lambda: make_due(pool, "markets.modo_niv"), timeout_s=10)
        await eventually(lambda: ran_ok(first["runs"]), timeout_s=30)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM outbox WHERE type = 'niv.updated' "
                "AND envelope->>'subject' LIKE 'modo/%%' AND created_at >= %s",
                (since,),
            )
            assert (await cur.fetchone())["n"] == len(expected)  # type: ignore[index]
