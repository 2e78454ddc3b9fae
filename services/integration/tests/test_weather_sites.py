# ruff: noqa: F811  (the fixtures imported from market_fixtures are parameters of the tests)
"""Sites learnt from device.registered, PV arrays through the API (validated, org-scoped), and the
Open-Meteo -> pvlib PV forecast published as weather.forecast_updated and forecast.updated."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import DeviceRegistered, EventType, ForecastUpdated, make_event
from nattery_integration.providers.errors import ProviderDataInvalid
from nattery_integration.replay.runner import ReplayServer
from nattery_integration.replay.server import Fault
from nattery_integration.sites.consumers import SitesConsumer
from nattery_integration.sites.repository import SitesRepository
from nattery_integration.weather import openmeteo
from nattery_integration.weather.pv import PvArray, pv_forecast
from nattery_integration.weather.service import WeatherService
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TestIssuer, bearer, eventually

sys.path.insert(0, str(Path(__file__).parent))
from market_fixtures import Published, client_for, pool, published, replay  # noqa: F401

pytestmark = pytest.mark.timeout(60)

MIDSUMMER = datetime(2026, 6, 21, 0, 0, tzinfo=UTC)
ARRAY = {"latitude": 51.75, "longitude": -1.25, "kwp": 5.0, "tilt_deg": 35, "azimuth_deg": 180}


def registered(org: uuid.UUID, site: uuid.UUID) -> Any:
    return make_event(
        EventType.DEVICE_REGISTERED,
        DeviceRegistered(
            org_id=org,
            site_id=site,
            device_id=uuid.uuid4(),
            site_slug="s",
            device_slug="inv1",
            kind="inverter",
        ),
        source="/services/device",
    )


async def test_pv_forecast_is_plausible(replay: ReplayServer) -> None:
    replay.state.now = lambda: MIDSUMMER
    async with client_for(replay, "open_meteo") as c:
        hours = await openmeteo.fetch_forecast(c, 51.75, -1.25, days=1)
    pv = pv_forecast(hours, PvArray(51.75, -1.25, kwp=5.0, tilt_deg=35, azimuth_deg=180))
    assert len(pv) == 24 and replay.state.requests["open_meteo"] == 1
    by_hour = {p.end.hour: p.pv_kw for p in pv}  # hour ending, UTC
    assert all(by_hour[h] == 0 for h in (0, 1, 2, 23))  # night
    peak = max(by_hour, key=lambda h: by_hour[h])
    assert 11 <= peak <= 14  # solar noon at -1.25° is ~12:05 UTC: the hour ending 12 or 13
    assert 0.5 < by_hour[peak] <= 5.0  # bounded by the array (inverter = kWp)
    assert 5.0 < sum(p.pv_kw for p in pv) < 40.0  # kWh in a day of 5 kWp in June, cloud included
    west = pv_forecast(hours, PvArray(51.75, -1.25, kwp=5.0, tilt_deg=35, azimuth_deg=270))
    assert (
        max(west, key=lambda p: p.pv_kw).end > max(pv, key=lambda p: p.pv_kw).end
    )  # a west roof peaks later


async def test_malformed_forecast_is_data_invalid(replay: ReplayServer) -> None:
    replay.state.add_faults("open_meteo", Fault(malformed=True))
    async with client_for(replay, "open_meteo") as c:
        with pytest.raises(ProviderDataInvalid):
            await openmeteo.fetch_forecast(c, 51.75, -1.25)
    with pytest.raises(ProviderDataInvalid, match="cloud_cover"):
        openmeteo.parse_forecast(
            b'{"latitude": 1, "longitude": 1, "hourly": {"time": [0], "temperature_2m": [1], "cloud_cover": [140],'
            b' "shortwave_radiation": [0], "direct_normal_irradiance": [0], "diffuse_radiation": [0],'
            b' "wind_speed_10m": [1]}}'
        )


async def test_sites_pv_arrays_and_forecasts_published(
    replay: ReplayServer,
    pool: AsyncConnectionPool,
    published: Published,
    client: httpx.AsyncClient,
    test_issuer: TestIssuer,
) -> None:
    org, other, site = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    admin, viewer = bearer(test_issuer, org, "admin"), bearer(test_issuer, org, "viewer")
    # unknown to the service until device-service registers a device on it
    r = await client.put(f"/sites/{site}/pv-array", headers=admin, json=ARRAY)
    assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "site_not_registered"}, r.text
    consumer = SitesConsumer(SitesRepository(pool))
    await consumer.on_device_registered(registered(org, site))
    await consumer.on_device_registered(registered(other, site))  # never moved to another org
    assert await SitesRepository(pool).org_of(site) == org

    for bad, field in (
        ({**ARRAY, "kwp": 0}, "kwp"),
        ({**ARRAY, "kwp": 5000}, "kwp"),
        ({**ARRAY, "tilt_deg": 91}, "tilt_deg"),
        ({**ARRAY, "azimuth_deg": -1}, "azimuth_deg"),
        ({**ARRAY, "latitude": 91}, "latitude"),
        ({**ARRAY, "longitude": 181}, "longitude"),
    ):
        r = await client.put(f"/sites/{site}/pv-array", headers=admin, json=bad)
        assert r.status_code == 422 and field in r.text, (field, r.text)
    assert (await client.put(f"/sites/{site}/pv-array", headers=viewer, json=ARRAY)).status_code == 403
    r = await client.get(f"/sites/{site}/pv-array", headers=viewer)
    assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "no_pv_array"}
    r = await client.put(f"/sites/{site}/pv-array", headers=admin, json=ARRAY)
    assert r.status_code == 200 and r.json()["losses_pct"] == 14.0, r.text
    got = (await client.get(f"/sites/{site}/pv-array", headers=viewer)).json()
    assert got["kwp"] == 5.0 and got["site_id"] == str(site)
    for method in ("get", "put"):  # another org: the same 404 as an unknown site
        r = await client.request(
            method, f"/sites/{site}/pv-array", headers=bearer(test_issuer, other), json=ARRAY
        )
        assert r.status_code == 404 and r.json()["error"]["details"] == {"reason": "site_not_registered"}

    replay.state.now = lambda: MIDSUMMER
    svc = WeatherService(pool, poke=published.relay.poke, now=lambda: MIDSUMMER)
    row = next(a for a in await SitesRepository(pool).pv_arrays() if a["site_id"] == site)
    async with client_for(replay, "open_meteo") as c:
        assert await svc.site(c, row) is True
        assert await svc.site(c, row) is False  # the same forecast is not republished
    forecast = (await eventually(lambda: published.of("forecast.updated", str(site))))[0]
    weather = (await eventually(lambda: published.of("weather.forecast_updated", str(site))))[0]
    data: ForecastUpdated = forecast.data
    assert data.org_id == org and data.model == "pvlib-pvwatts/open-meteo"
    assert all(p.load_kw is None and 0 <= p.pv_kw <= 5.0 for p in data.points)
    assert max(p.pv_kw for p in data.points) > 0.5
    assert (
        weather.data.points[12].irradiance_w_per_m2 > 0 and weather.data.points[12].dni_w_per_m2 is not None
    )


async def test_device_registered_reaches_the_consumer_through_rabbitmq(
    client: httpx.AsyncClient, settings: Any, test_issuer: TestIssuer
) -> None:
    org, site = uuid.uuid4(), uuid.uuid4()
    bus = EventBus(settings.rabbit, source="/tests/device")
    bus.start()
    await bus.wait_connected(10)
    try:
        await eventually(lambda: _ready(client))
        await bus.publish(registered(org, site))

        async def configured() -> bool:
            r = await client.put(f"/sites/{site}/pv-array", headers=bearer(test_issuer, org), json=ARRAY)
            return r.status_code == 200

        await eventually(configured)
    finally:
        await bus.close()


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
