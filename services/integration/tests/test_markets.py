"""Markets against the replay servers over local HTTP, with the real PostgreSQL and RabbitMQ: Octopus
pagination, a day not yet published (retried, never a partial set), versions (same prices no event, a
changed price a new version), malformed answers, ENTSO-E hourly/15-minute/A03/acknowledgements, NIV."""

# ruff: noqa: F811  (the fixtures imported from market_fixtures are parameters of the tests)
from __future__ import annotations

import itertools
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import MarketPricesUpdated, NivUpdated
from nattery_integration.markets import entsoe, niv, octopus
from nattery_integration.markets.prices import LONDON, IncompletePrices, london_day_window
from nattery_integration.markets.service import MarketsService, octopus_days
from nattery_integration.providers.errors import ProviderDataInvalid, ProviderRejected
from nattery_integration.replay.runner import ReplayServer
from nattery_integration.replay.server import Fault
from nattery_shared.testing import eventually

sys.path.insert(0, str(Path(__file__).parent))
from market_fixtures import Published, client_for, pool, published, replay  # noqa: F401

pytestmark = pytest.mark.timeout(60)

# 17:00 UK on 15 January: tomorrow's Agile day is due (published around 16:00)
NOW = datetime(2026, 1, 15, 17, 0, tzinfo=LONDON).astimezone(UTC)
PRODUCT = "AGILE-24-10-01"


def market() -> str:
    return f"octopus-agile-test-{uuid.uuid4().hex[:8]}"


async def price_sets(pool: AsyncConnectionPool, market: str) -> list[tuple[datetime, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT window_start, version FROM price_sets WHERE market = %s ORDER BY window_start, version",
            (market,),
        )
        return [(r["window_start"], r["version"]) for r in await cur.fetchall()]


async def test_octopus_pages_are_followed_to_a_whole_day(replay: ReplayServer) -> None:
    replay.state.now = lambda: NOW
    start, end = london_day_window(date(2026, 1, 15))
    async with client_for(replay, "octopus") as c:
        prices = await octopus.fetch_unit_rates(c, PRODUCT, "J", start, end, page_size=10)
    assert replay.state.requests["octopus"] == 5  # 48 rates, 10 a page
    assert len(prices) == 48 and prices[0].start == start and prices[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(prices))  # oldest first, no gaps
    assert any(p.minor_per_kwh != prices[0].minor_per_kwh for p in prices)


async def test_a_day_not_yet_published_is_retried_and_never_published_in_part(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published
) -> None:
    m = market()
    replay.state.now = lambda: NOW
    tomorrow_start, tomorrow_end = london_day_window(date(2026, 1, 16))
    replay.state.octopus_published_until = tomorrow_end - timedelta(hours=3)  # published in part
    svc = MarketsService(pool, poke=published.relay.poke, now=lambda: NOW)
    assert octopus_days(NOW) == [date(2026, 1, 15), date(2026, 1, 16)]
    async with client_for(replay, "octopus") as c:
        today = await svc.octopus_day(c, PRODUCT, "J", "import", date(2026, 1, 15), market=m)
        with pytest.raises(IncompletePrices, match="not published yet"):
            await svc.octopus_day(c, PRODUCT, "J", "import", date(2026, 1, 16), market=m)
        assert [t for t, _ in await price_sets(pool, m)] == [london_day_window(date(2026, 1, 15))[0]]

        replay.state.octopus_published_until = None  # now wholly published
        later = await svc.octopus_day(c, PRODUCT, "J", "import", date(2026, 1, 16), market=m)
    assert today.published and later.published and later.version == 1
    events = await eventually(
        lambda: (
            len(published.of("market.prices_updated", m)) == 2 and published.of("market.prices_updated", m)
        )
    )
    data: MarketPricesUpdated = events[-1].data
    assert data.prices[0].start == tomorrow_start and data.prices[-1].end == tomorrow_end
    assert len(data.prices) == 48 and data.currency == "GBP" and data.unit == "p/kWh" and data.version == 1
    assert all(p.price == p.price_p_per_kwh for p in data.prices)


async def test_same_prices_publish_nothing_a_changed_price_a_new_version(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published
) -> None:
    m = market()
    replay.state.now = lambda: NOW
    day = date(2026, 1, 15)
    svc = MarketsService(pool, poke=published.relay.poke, now=lambda: NOW)
    async with client_for(replay, "octopus") as c:
        first = await svc.octopus_day(c, PRODUCT, "C", "export", day, market=m)
        again = await svc.octopus_day(c, PRODUCT, "C", "export", day, market=m)
        start = london_day_window(day)[0] + timedelta(hours=18)
        replay.state.octopus_overrides[("import", start)] = 99.5  # the product has no OUTGOING: import curve
        changed = await svc.octopus_day(c, PRODUCT, "C", "export", day, market=m)
    assert (first.version, first.published) == (1, True)
    assert (again.version, again.published) == (1, False)
    assert (changed.version, changed.published) == (2, True)
    assert [v for _, v in await price_sets(pool, m)] == [1, 2]
    events = await eventually(
        lambda: (
            len(published.of("market.prices_updated", m)) >= 2 and published.of("market.prices_updated", m)
        )
    )
    assert [e.data.version for e in events] == [1, 2]
    assert next(p for p in events[1].data.prices if p.start == start).price_p_per_kwh == 99.5


async def test_malformed_json_is_data_invalid_and_nothing_is_published(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published
) -> None:
    m = market()
    replay.state.now = lambda: NOW
    replay.state.add_faults("octopus", Fault(malformed=True))
    svc = MarketsService(pool, poke=published.relay.poke, now=lambda: NOW)
    async with client_for(replay, "octopus") as c:
        with pytest.raises(ProviderDataInvalid, match="not the expected JSON"):
            await svc.octopus_day(c, PRODUCT, "J", "import", date(2026, 1, 15), market=m)
        assert await price_sets(pool, m) == []
        # the next answer is good: recorded and published as version 1
        assert (await svc.octopus_day(c, PRODUCT, "J", "import", date(2026, 1, 15), market=m)).version == 1
    with pytest.raises(ValueError, match="GSP letter"):
        octopus.validate_product_region(PRODUCT, "I")


async def test_entsoe_hourly_and_quarter_hourly_days(replay: ReplayServer) -> None:
    async with client_for(replay, "entsoe") as c:
        # 30 Mar 2025 (spring forward, hourly MTU): 23 hours of the CET day
        currency, unit, hourly = await entsoe.fetch_day_ahead(
            c, "token", "NL", datetime(2025, 3, 29, 23, tzinfo=UTC), datetime(2025, 3, 30, 22, tzinfo=UTC)
        )
        # 15-minute MTU from 1 Oct 2025; DE-LU answers sequences 1 (SDAC) and 2 (EXAA): 1 is taken
        _, _, quarter = await entsoe.fetch_day_ahead(
            c, "token", "DE-LU", datetime(2026, 1, 14, 23, tzinfo=UTC), datetime(2026, 1, 15, 23, tzinfo=UTC)
        )
    assert (currency, unit) == ("EUR", "EUR/MWh")
    assert len(hourly) == 23 and all(p.end - p.start == timedelta(hours=1) for p in hourly)
    assert len(quarter) == 96 and all(p.end - p.start == timedelta(minutes=15) for p in quarter)
    assert all(abs(p.minor_per_kwh - p.native / 10) < 1e-9 for p in quarter)  # EUR/MWh -> cents/kWh
    repeated = [b for a, b in itertools.pairwise(quarter) if a.native == b.native]
    assert repeated  # positions A03 omitted, filled with the previous price


def publication(points: str, resolution: str = "PT60M", curve: str = "A03") -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <TimeSeries><currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>{curve}</curveType>
    <Period><timeInterval><start>2025-06-01T22:00Z</start><end>2025-06-02T04:00Z</end></timeInterval>
      <resolution>{resolution}</resolution>{points}</Period></TimeSeries>
</Publication_MarketDocument>""".encode()


def test_entsoe_a03_gaps_are_filled_forward_to_the_end() -> None:
    body = publication(
        "<Point><position>1</position><price.amount>50.5</price.amount></Point>"
        "<Point><position>3</position><price.amount>-3.2</price.amount></Point>"
        "<Point><position>5</position><price.amount>70</price.amount></Point>"
    )
    _, _, prices = entsoe.to_prices(entsoe.parse_document(body))
    assert [p.native for p in prices] == [50.5, 50.5, -3.2, -3.2, 70.0, 70.0]
    assert prices[-1].end == datetime(2025, 6, 2, 4, tzinfo=UTC)
    with pytest.raises(ProviderDataInvalid, match="curve type A01 with 3 of 6"):
        entsoe.parse_document(
            publication(
                "<Point><position>1</position><price.amount>1</price.amount></Point>"
                "<Point><position>2</position><price.amount>1</price.amount></Point>"
                "<Point><position>6</position><price.amount>1</price.amount></Point>",
                curve="A01",
            )
        )


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><Publication_MarketDocument><TimeSeries><Period>',  # truncated
        b"not xml at all",
        publication("<Point><position>9</position><price.amount>1</price.amount></Point>"),  # outside
        publication("<Point><position>1</position><price.amount>cheap</price.amount></Point>"),
        publication("", resolution="PT7M"),
        b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>',  # entities: refused
    ],
)
def test_malformed_entsoe_xml_is_data_invalid(body: bytes) -> None:
    with pytest.raises(ProviderDataInvalid):
        entsoe.to_prices(entsoe.parse_document(body))


async def test_entsoe_acknowledgements_and_token_become_clear_errors(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published
) -> None:
    day = (datetime(2026, 1, 15, 0, tzinfo=UTC), datetime(2026, 1, 16, 0, tzinfo=UTC))
    async with client_for(replay, "entsoe") as c:
        for status in (200, 400):  # no data: 200 today, 400 from older servers
            replay.state.ack_status = status
            with pytest.raises(entsoe.NoMatchingData, match="reason 999: No matching data found"):
                await entsoe.fetch_day_ahead(c, "token", "GB", *day)
        with pytest.raises(ProviderRejected, match="security token was refused"):
            await entsoe.fetch_day_ahead(c, "", "NL", *day)
        replay.state.add_faults("entsoe", Fault(malformed=True))
        with pytest.raises(ProviderDataInvalid):
            await entsoe.fetch_day_ahead(c, "token", "NL", *day)
        # a day not published yet is "incomplete" for the job (retried), and nothing is stored
        m = f"entsoe-test-{uuid.uuid4().hex[:8]}"
        replay.state.entsoe_published_until = datetime(2026, 1, 15, 23, tzinfo=UTC)
        svc = MarketsService(pool, poke=published.relay.poke)
        with pytest.raises(IncompletePrices, match="No matching data"):
            await svc.entsoe_day(c, "token", "NL", date(2026, 1, 16), market=m)
        recorded = await svc.entsoe_day(c, "token", "NL", date(2026, 1, 15), market=m)
    assert recorded.published and await price_sets(pool, m) == [(datetime(2026, 1, 14, 23, tzinfo=UTC), 1)]
    event = (await eventually(lambda: published.of("market.prices_updated", m)))[0]
    data: MarketPricesUpdated = event.data
    assert (data.currency, data.unit, data.region, len(data.prices)) == (
        "EUR",
        "EUR/MWh",
        "10YNL----------L",
        96,
    )


async def test_elexon_niv_per_settlement_period(
    replay: ReplayServer, pool: AsyncConnectionPool, published: Published
) -> None:
    async with client_for(replay, "elexon") as c:
        long_day = await niv.fetch_elexon(c, date(2025, 10, 26))
        short_day = await niv.fetch_elexon(c, date(2026, 3, 29))
        replay.state.add_faults("elexon", Fault(malformed=True))
        with pytest.raises(ProviderDataInvalid):
            await niv.fetch_elexon(c, date(2025, 10, 26))
    assert (len(long_day), len(short_day)) == (50, 46)
    assert long_day[0].start == datetime(2025, 10, 25, 23, tzinfo=UTC)  # SP1 = 00:00 BST
    assert long_day[4].start == datetime(2025, 10, 26, 1, tzinfo=UTC)  # SP5 of the long day: 01:00 GMT
    source = f"elexon-test-{uuid.uuid4().hex[:6]}"
    svc = MarketsService(pool, poke=published.relay.poke)
    assert await svc.record_niv(source, long_day) == 50
    assert await svc.record_niv(source, long_day) == 0  # unchanged: nothing republished
    events = await eventually(
        lambda: len(published.of("niv.updated", source)) == 50 and published.of("niv.updated", source)
    )
    first: NivUpdated = next(e.data for e in events if e.data.settlement_period == 1)
    assert (
        first.source == source and first.start == long_day[0].start and first.niv_mwh == long_day[0].niv_mwh
    )
    assert first.system_sell_price_gbp_per_mwh == long_day[0].system_sell_price_gbp_per_mwh


async def test_modo_niv_needs_its_key(replay: ReplayServer) -> None:
    replay.state.now = lambda: NOW
    async with client_for(replay, "modo") as c:
        with pytest.raises(ProviderRejected, match="no API key"):
            await niv.fetch_modo(c, "", date(2026, 1, 15))
        points = await niv.fetch_modo(c, "modo-key", date(2026, 1, 15))
    assert len(points) == 34 and [p.settlement_period for p in points] == list(range(1, 35))  # up to 17:00
