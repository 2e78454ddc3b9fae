"""Tariff rules: an org's tariffs, which one a site uses per direction, and the market's prices."""

from __future__ import annotations

import uuid

from nattery_contracts.events import MarketPricesUpdated
from nattery_shared.errors import NotFound, Unprocessable
from nattery_trading.sites.service import SiteService
from nattery_trading.tariffs.repository import TariffRepository, TariffRow
from nattery_trading.tariffs.schemas import TariffIn


class TariffService:
    def __init__(self, repo: TariffRepository, sites: SiteService) -> None:
        self.repo = repo
        self.sites = sites

    async def create(self, org_id: uuid.UUID, body: TariffIn) -> TariffRow:
        return await self.repo.create(org_id, body.model_dump())

    async def of_org(self, org_id: uuid.UUID) -> list[TariffRow]:
        return await self.repo.of_org(org_id)

    async def use_for_site(
        self, org_id: uuid.UUID, site_id: uuid.UUID, direction: str, tariff_id: uuid.UUID
    ) -> None:
        """The org's configured site uses the org's ``tariff_id`` for ``direction`` (404, 422)."""
        await self.sites.configured(org_id, site_id)
        tariff = await self.repo.get(tariff_id)
        if tariff is None or tariff.org_id != org_id:
            raise NotFound(f"tariff {tariff_id} not found")
        if tariff.direction != direction:
            raise Unprocessable(f"tariff {tariff_id} is an {tariff.direction} tariff")
        await self.repo.assign(site_id, direction, tariff_id)

    async def store_prices(self, data: MarketPricesUpdated) -> list[uuid.UUID]:
        """Store a market's published prices; returns the sites whose plans they change."""
        region = data.region or ""
        await self.repo.upsert_prices(
            data.market,
            region,
            data.direction,
            [(p.start, p.end, p.price_p_per_kwh) for p in data.prices],
            data.published_at,
            data.currency,
        )
        return await self.repo.sites_on_market(data.market, region, data.direction)
