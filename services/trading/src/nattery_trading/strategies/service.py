"""Strategy rules: operators set a site's strategy, which re-plans the site."""

from __future__ import annotations

import uuid

from nattery_trading.schedules.service import PlanningService
from nattery_trading.sites.service import SiteService
from nattery_trading.strategies.repository import StrategyRepository
from nattery_trading.strategies.schemas import StrategyIn


class StrategyService:
    def __init__(self, repo: StrategyRepository, sites: SiteService, planning: PlanningService) -> None:
        self.repo = repo
        self.sites = sites
        self.planning = planning

    async def set(self, org_id: uuid.UUID, site_id: uuid.UUID, body: StrategyIn, by: str) -> StrategyIn:
        """Store the strategy and re-plan the site for it (the job key is the strategy's version)."""
        await self.sites.configured(org_id, site_id)
        row = await self.repo.set(site_id, body.model_dump(mode="json"), by)
        await self.planning.replan_sites(
            org_id, site_id, "strategy changed", f"strategy:{row.updated_at.isoformat()}"
        )
        return body

    async def get(self, org_id: uuid.UUID, site_id: uuid.UUID) -> StrategyIn:
        """The site's strategy (the defaults until one is set)."""
        await self.sites.configured(org_id, site_id)
        row = await self.repo.get(site_id)
        if row is None:
            return StrategyIn()
        return StrategyIn.model_validate({k: getattr(row, k) for k in StrategyIn.model_fields})
