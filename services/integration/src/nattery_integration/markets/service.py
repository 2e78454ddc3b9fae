"""Market rules: fetch a complete price set, store it as a new version only when it changed, and publish
it (``market.prices_updated``) in the same transaction through the outbox; the same for GB NIV.

- Octopus Agile (import and Outgoing export): market ``octopus-agile``, region = the GSP letter,
  delivery day D = [D-1 23:00, D 23:00) UK local, published around 16:00 UK on D-1.
- ENTSO-E day-ahead: market ``entsoe-day-ahead``, region = the bidding zone's EIC code, delivery day =
  the zone's local day, published after the SDAC auction (about 13:00 CET on D-1); prices EUR/MWh,
  carried as EUR cents per kWh.
- A window that is not complete is never stored nor published (``IncompletePrices``: retry later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import EventType, MarketPricesUpdated, NivUpdated, PricePoint
from nattery_integration.events import OUTBOX
from nattery_integration.markets import entsoe, niv, octopus
from nattery_integration.markets.niv import NivPoint
from nattery_integration.markets.prices import (
    LONDON,
    IncompletePrices,
    PriceSet,
    complete_set,
    local_day_window,
    london_day_window,
)
from nattery_integration.markets.repository import MarketsRepository

log = logging.getLogger(__name__)

OCTOPUS_MARKET = "octopus-agile"
ENTSOE_MARKET = "entsoe-day-ahead"
OCTOPUS_PUBLICATION = time(16, 0)  # UK local, the day before delivery
# A complete day is fetched again after this (a corrected price is republished as a new version);
# a missing one at every run of the job.
RECHECK_AFTER = timedelta(minutes=30)
ENTSOE_PUBLICATION = time(13, 0)  # Europe/Brussels, the day before delivery (SDAC results ~12:45)
# Delivery days are local; the CET/CEST zones share one clock.
ZONE_TZ = {
    "10YPT-REN------W": "Europe/Lisbon",
    "10Y1001A1001A59C": "Europe/Dublin",
    "10YGB----------A": "Europe/London",
    "10YFI-1--------U": "Europe/Helsinki",
    "10Y1001A1001A39I": "Europe/Tallinn",
    "10YLV-1001A00074": "Europe/Riga",
    "10YLT-1001A0008Q": "Europe/Vilnius",
}


@dataclass(frozen=True)
class Recorded:
    """What recording one price set did: ``version`` is new when ``published``."""

    market: str
    region: str
    direction: str
    start: datetime
    version: int
    published: bool


def zone_tz(eic: str) -> str:
    return ZONE_TZ.get(eic, "Europe/Brussels")


def octopus_days(now: datetime) -> list[date]:
    """Delivery days to have now: today's, and tomorrow's once it is due (after 16:00 UK)."""
    local = now.astimezone(LONDON)
    today = (local + timedelta(hours=1)).date()  # the window of day D starts at 23:00 on D-1
    days = [today]
    if local.time() >= OCTOPUS_PUBLICATION and local.date() == today:
        days.append(today + timedelta(days=1))
    return days


def entsoe_days(now: datetime, eic: str) -> list[date]:
    local = now.astimezone(ZoneInfo(zone_tz(eic)))
    days = [local.date()]
    if local.astimezone(ZoneInfo("Europe/Brussels")).time() >= ENTSOE_PUBLICATION:
        days.append(local.date() + timedelta(days=1))
    return days


class MarketsService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        poke: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repo = MarketsRepository(pool)
        self.pool = pool
        self.poke = poke  # the outbox relay: publish now
        self.now = now
        # (market, region, direction, window start) -> when its complete set was last fetched
        self._fetched: dict[tuple[str, str, str, datetime], datetime] = {}
        self.recheck_after = RECHECK_AFTER

    def fresh(self, market: str, region: str, direction: str, start: datetime) -> bool:
        """A complete set of this window was fetched less than ``recheck_after`` ago: skip it."""
        at = self._fetched.get((market, region, direction, start))
        return at is not None and self.now() - at < self.recheck_after

    async def record(self, s: PriceSet, provider: str) -> Recorded:
        """Store ``s`` as a new version and enqueue its event, unless the latest version has the same
        prices (then nothing happens: same prices, no new event)."""
        async with self.pool.connection() as conn, conn.transaction():
            await self.repo.lock_price_set(conn, s)
            latest = await self.repo.latest_version(conn, s)
            self._fetched[(s.market, s.region, s.direction, s.start)] = self.now()
            if latest is not None and latest["digest"] == s.digest():
                return Recorded(s.market, s.region, s.direction, s.start, int(latest["version"]), False)
            version = 1 if latest is None else int(latest["version"]) + 1
            await self.repo.insert_version(conn, s, version, provider)
            data = MarketPricesUpdated(
                market=s.market,
                region=s.region,
                direction=s.direction,
                prices=[
                    PricePoint(start=p.start, end=p.end, price_p_per_kwh=p.minor_per_kwh, price=p.native)
                    for p in s.prices
                ],
                published_at=self.now(),
                currency=s.currency,
                unit=s.unit,
                version=version,
            )
            await OUTBOX.enqueue(
                conn, EventType.MARKET_PRICES_UPDATED, data, subject=f"{s.market}/{s.region}/{s.direction}"
            )
        self.poke()
        log.info(
            "%s %s %s prices from %s: version %d (%d prices, %s) published",
            s.market,
            s.region,
            s.direction,
            s.start.isoformat(),
            version,
            len(s.prices),
            s.unit,
        )
        return Recorded(s.market, s.region, s.direction, s.start, version, True)

    # --- Octopus ---------------------------------------------------------------------------------
    async def octopus_day(
        self,
        client: httpx.AsyncClient,
        product: str,
        region: str,
        direction: str,
        day: date,
        market: str = OCTOPUS_MARKET,
    ) -> Recorded:
        """Agile delivery day ``day``; IncompletePrices while it is not wholly published."""
        start, end = london_day_window(day)
        prices = await octopus.fetch_unit_rates(client, product, region, start, end)
        s = complete_set(
            market=market,
            region=region,
            direction=direction,
            currency="GBP",
            unit="p/kWh",
            start=start,
            end=end,
            prices=prices,
        )
        return await self.record(s, "octopus")

    async def octopus_due(
        self, client: httpx.AsyncClient, product: str, region: str, direction: str
    ) -> list[Recorded]:
        """Every day due now (``octopus_days``) not fetched complete within ``recheck_after``; the first
        missing one raises IncompletePrices after the ones before it are recorded."""
        return [
            await self.octopus_day(client, product, region, direction, d)
            for d in octopus_days(self.now())
            if not self.fresh(OCTOPUS_MARKET, region, direction, london_day_window(d)[0])
        ]

    # --- ENTSO-E ---------------------------------------------------------------------------------
    async def entsoe_day(
        self, client: httpx.AsyncClient, token: str, zone: str, day: date, market: str = ENTSOE_MARKET
    ) -> Recorded:
        eic = entsoe.zone_eic(zone)
        start, end = local_day_window(day, zone_tz(eic))
        try:
            currency, unit, prices = await entsoe.fetch_day_ahead(client, token, eic, start, end)
        except entsoe.NoMatchingData as e:
            raise IncompletePrices(f"{market} {eic} {day}: {e.reasons}") from e
        s = complete_set(
            market=market,
            region=eic,
            direction="import",
            currency=currency,
            unit=unit,
            start=start,
            end=end,
            prices=prices,
        )
        return await self.record(s, "entsoe")

    async def entsoe_due(self, client: httpx.AsyncClient, token: str, zone: str) -> list[Recorded]:
        eic = entsoe.zone_eic(zone)
        return [
            await self.entsoe_day(client, token, eic, d)
            for d in entsoe_days(self.now(), eic)
            if not self.fresh(ENTSOE_MARKET, eic, "import", local_day_window(d, zone_tz(eic))[0])
        ]

    # --- NIV -------------------------------------------------------------------------------------
    async def record_niv(self, source: str, points: list[NivPoint]) -> int:
        """Store the periods; publish ``niv.updated`` for each new or changed one. Returns how many."""
        changed = 0
        async with self.pool.connection() as conn, conn.transaction():
            for p in points:
                if not await self.repo.upsert_niv(conn, source, p):
                    continue
                changed += 1
                await OUTBOX.enqueue(
                    conn,
                    EventType.NIV_UPDATED,
                    NivUpdated(
                        settlement_date=p.settlement_date.isoformat(),
                        settlement_period=p.settlement_period,
                        niv_mwh=p.niv_mwh,
                        system_sell_price_gbp_per_mwh=p.system_sell_price_gbp_per_mwh,
                        system_buy_price_gbp_per_mwh=p.system_buy_price_gbp_per_mwh,
                        source=source,
                        start=p.start,
                    ),
                    subject=f"{source}/{p.settlement_date.isoformat()}/{p.settlement_period}",
                )
        if changed:
            self.poke()
        return changed

    def niv_days(self) -> list[date]:
        """Today (UK), and yesterday during the first hour (its last periods settle after midnight)."""
        local = self.now().astimezone(LONDON)
        days = [local.date()]
        if local.hour < 1:
            days.insert(0, local.date() - timedelta(days=1))
        return days

    async def elexon_niv(self, client: httpx.AsyncClient) -> int:
        return sum(
            [await self.record_niv("elexon", await niv.fetch_elexon(client, d)) for d in self.niv_days()]
        )

    async def modo_niv(self, client: httpx.AsyncClient, token: str) -> int:
        return sum(
            [await self.record_niv("modo", await niv.fetch_modo(client, token, d)) for d in self.niv_days()]
        )
