"""Prices carry their currency: a EUR tariff is planned from EUR prices (ENTSO-E's EUR/MWh carried as
euro cents per kWh), never from another currency's; events without a currency still mean GBP pence."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from nattery_contracts.events import CloudEvent, EventType, MarketPricesUpdated, PricePoint, make_event
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TestIssuer, bearer, eventually

pytestmark = pytest.mark.timeout(120)


def eur_prices(now: datetime) -> list[PricePoint]:
    """Hourly EUR/MWh day-ahead prices split into half-hours: cheap (and negative) at night, dear at 18-20."""
    points = []
    for i in range(-48, 48):
        start = now + timedelta(minutes=30 * i)
        eur_per_mwh = -12.0 if 4 <= i < 8 else (180.0 if 20 <= i < 26 else 90.0)
        points.append(
            PricePoint(
                start=start,
                end=start + timedelta(minutes=30),
                price_p_per_kwh=eur_per_mwh / 10,
                price=eur_per_mwh,
            )
        )
    return points


async def test_a_eur_site_is_planned_from_eur_prices_only(
    client: httpx.AsyncClient,
    test_issuer: TestIssuer,
    bus: EventBus,
    make_device_registered: Callable[..., CloudEvent[Any]],
) -> None:
    org = uuid.uuid4()
    admin, viewer = bearer(test_issuer, org, "admin"), bearer(test_issuer, org, "viewer")
    zone = f"10Y{uuid.uuid4().hex[:12].upper()}X"  # a bidding zone of this test only
    eur_site, gbp_site = uuid.uuid4(), uuid.uuid4()
    for site in (eur_site, gbp_site):
        await bus.publish(make_device_registered(org, site))

    async def battery(site: uuid.UUID) -> httpx.Response | None:
        r = await client.put(
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

    for site, currency in ((eur_site, "EUR"), (gbp_site, "GBP")):
        assert (await eventually(lambda s=site: battery(s))).status_code == 200
        r = await client.post(
            "/tariffs",
            headers=admin,
            json={
                "name": f"day-ahead {currency}",
                "direction": "import",
                "kind": "dynamic",
                "market": "entsoe-day-ahead",
                "region": zone,
                "currency": currency,
            },
        )
        assert r.status_code == 201 and r.json()["currency"] == currency, r.text
        r = await client.put(
            f"/sites/{site}/tariffs/import", headers=admin, params={"tariff_id": r.json()["tariff_id"]}
        )
        assert r.status_code == 204, r.text

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await bus.publish(
        make_event(
            EventType.MARKET_PRICES_UPDATED,
            MarketPricesUpdated(
                market="entsoe-day-ahead",
                region=zone,
                direction="import",
                prices=eur_prices(now),
                published_at=now,
                currency="EUR",
                unit="EUR/MWh",
                version=1,
            ),
            source="/tests",
        )
    )

    async def schedule() -> dict[str, Any] | None:
        r = await client.get(f"/sites/{eur_site}/schedule", headers=viewer)
        return r.json() if r.status_code == 200 else None

    plan = await eventually(schedule)
    published = plan["slots"][:40]  # the next 20 h: published prices (beyond: trading's own price forecast)
    by_price = {round(s["import_p_per_kwh"], 3) for s in published}
    assert by_price <= {-1.2, 9.0, 18.0}, by_price  # euro cents per kWh, as published
    cheap = [s["battery_power_kw"] for s in published if s["import_p_per_kwh"] < 0]
    dear = [s["battery_power_kw"] for s in published if s["import_p_per_kwh"] == 18.0]
    assert cheap and min(cheap) == -5.0 and sum(cheap) < 0, cheap  # charges when paid to import
    assert dear and max(dear) > 0, dear  # and discharges when import is dearest

    # the GBP tariff on the same market and zone has no GBP prices: never planned from euro cents
    r = await client.post(f"/sites/{gbp_site}/plan", headers=admin)
    assert r.status_code == 422 and "prices in GBP" in r.text, r.text
