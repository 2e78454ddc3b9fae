"""End to end against the real servers: a week of a site's telemetry in InfluxDB (the device service's
``inverter`` measurement, tags org/site/device), a forecast issued through the API and by the scheduled
job, ``forecast.updated`` received from RabbitMQ and checked against the contract and the data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from analytics_test_helpers import Received
from psycopg_pool import AsyncConnectionPool

from nattery_analytics.forecasts.model import MODEL_NAME, SEASONAL_NAIVE_NAME
from nattery_analytics.forecasts.repository import SiteKey
from nattery_analytics.forecasts.service import LoadForecastService
from nattery_analytics.settings import AnalyticsSection
from nattery_contracts.events import ForecastUpdated
from nattery_shared.influx import InfluxClient, line
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TestIssuer, bearer, eventually

LONDON = ZoneInfo("Europe/London")  # the service's default forecast timezone


def pattern_kw(t: datetime) -> float:
    """Every half-hour of the local day its own load; an evening peak. Repeats daily."""
    local = t.astimezone(LONDON)
    half_hour = local.hour * 2 + local.minute // 30
    return (400 + 10 * half_hour + (1500 if 36 <= half_hour < 42 else 0)) / 1000


def pv_kw(t: datetime) -> float:
    return 2.0 if 10 <= t.hour < 14 else 0.0


async def write_week(influx: InfluxClient, key: SiteKey, end: datetime) -> None:
    """One reading a minute (the contract allows any cadence; the bridge sends one every 5 s)."""
    device = str(uuid.uuid4())
    tags = {"org": str(key.org_id), "site": str(key.site_id), "device": device}
    first = end.replace(second=0, microsecond=0) - timedelta(days=7)
    minutes = int((end - first) // timedelta(minutes=1))
    lines = [
        line(
            "inverter",
            tags,
            {"load_power_w": pattern_kw(t) * 1000, "pv_power_w": pv_kw(t) * 1000, "battery_soc_pct": 50.0},
            t,
        )
        for t in (first + timedelta(minutes=m) for m in range(minutes))
    ]
    for i in range(0, len(lines), 5000):
        await influx.write_lines(lines[i : i + 5000])


async def test_operator_issues_a_forecast_and_it_is_published(
    client: httpx.AsyncClient,
    influx: InfluxClient,
    forecasts_received: Received,
    test_issuer: TestIssuer,
) -> None:
    key = SiteKey(uuid.uuid4(), uuid.uuid4())
    await write_week(influx, key, datetime.now(UTC))
    url = f"/sites/{key.site_id}/forecasts/load"

    viewer = bearer(test_issuer, key.org_id, role="viewer")
    assert (await client.get(url, headers=viewer)).status_code == 404  # nothing issued yet
    assert (await client.post(url, headers=viewer)).status_code == 403  # operators issue

    other_org = bearer(test_issuer, uuid.uuid4(), role="operator")
    assert (await client.post(url, headers=other_org)).status_code == 404  # not their site's telemetry

    r = await client.post(url, headers=bearer(test_issuer, key.org_id, role="operator"))
    assert r.status_code == 201, r.text
    issued = r.json()
    # A week of history is less than the 14 days the model needs, more than the 2 of the seasonal-naive
    # fallback: the seasonal naive, and it says so.
    assert issued["model"] == SEASONAL_NAIVE_NAME
    assert "fallback" in issued["reason"]

    events = await eventually(lambda: forecasts_received.for_site(key.site_id))
    assert len(events) == 1
    data: ForecastUpdated = events[0].data
    assert events[0].source == "/services/analytics"
    assert (data.org_id, data.site_id, data.model) == (key.org_id, key.site_id, SEASONAL_NAIVE_NAME)
    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    assert {p.start.astimezone(LONDON).date() for p in data.points} == {tomorrow}
    assert all(p.end - p.start == timedelta(minutes=30) for p in data.points)
    half_hour = timedelta(minutes=30)
    for p in data.points:
        # A pattern that repeats daily: the same time's median is the pattern; the median of the slot and
        # its ±30 min neighbours (about as many days each) is the middle of the three; the mean of both.
        three = sorted(pattern_kw(p.start + d) for d in (-half_hour, timedelta(0), half_hour))
        expected = (pattern_kw(p.start) + three[1]) / 2
        assert p.load_kw is not None and abs(p.load_kw - expected) < 1e-6, p
        assert p.pv_kw is None, "a load forecast must not overwrite the weather-based PV forecast"

    # The API shows PV by the same time on the last days beside the load forecast.
    assert all(abs(p["pv_kw"] - pv_kw(datetime.fromisoformat(p["start"]))) < 1e-6 for p in issued["points"])

    latest = await client.get(url, headers=viewer)
    assert latest.status_code == 200
    assert latest.json() == issued
    assert (
        await client.get(url, headers=bearer(test_issuer, uuid.uuid4(), role="viewer"))
    ).status_code == 404


async def test_scheduled_job_trains_a_model_and_issues_once_a_day(
    pool: AsyncConnectionPool, influx: InfluxClient, bus: EventBus, forecasts_received: Received
) -> None:
    key = SiteKey(uuid.uuid4(), uuid.uuid4())
    today = datetime.now(LONDON).date()
    after_issue = datetime.combine(today, time(17, 0), tzinfo=LONDON).astimezone(UTC)
    await write_week(influx, key, after_issue)
    # Three days of history are enough for the model here (production needs 14): the job trains it.
    cfg = AnalyticsSection(forecast_min_history_days=3)
    clock = [after_issue - timedelta(hours=2)]
    service = LoadForecastService(pool, influx, bus, cfg, clock=lambda: clock[0])

    assert await service.run_due() == 0  # 15:00 local: not yet the issue time
    clock[0] = after_issue
    assert await service.run_due() >= 1
    events = await eventually(lambda: forecasts_received.for_site(key.site_id))
    data: ForecastUpdated = events[0].data
    assert data.model == MODEL_NAME
    assert len(data.points) == 48 or today.month in (3, 10)  # 46 / 50 on clock-change days
    errors = [abs((p.load_kw or 0.0) - pattern_kw(p.start)) for p in data.points]
    assert max(errors) < 0.25, errors  # five days of a repeating pattern: the model has learnt it

    stored = await service.latest(key.org_id, key.site_id)
    assert stored.model == MODEL_NAME and "trained on" in stored.reason
    for p in stored.points:
        assert p.load_p10_kw is not None and p.load_p90_kw is not None
        assert p.load_p10_kw <= p.load_kw <= p.load_p90_kw

    clock[0] = after_issue + timedelta(hours=1)
    assert await service.run_due() == 0  # issued once per site and local day
