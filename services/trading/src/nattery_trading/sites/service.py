"""Site rules: a site-keyed request is served only for a site registered to the caller's org.

Trading learns sites from device-service's ``device.registered`` (``consumers.py``); it never calls
device-service. Unknown and another org's site get the same 404 (message, code and details), so the
answer tells nothing about sites of other orgs. A site whose first device was registered a moment ago
is not known yet (device-service's outbox relay publishes within about a second, then the
``trading.sites`` consumer applies it): the 404 says so, and a client retries.

A registered site is planned once its battery is configured (``PUT /sites/{id}/battery``, admins).
"""

from __future__ import annotations

import uuid

from nattery_shared.errors import NotFound
from nattery_trading.sites.repository import SiteConfig, SiteRegistry, SiteRepository
from nattery_trading.sites.schemas import BatteryConfig

NOT_REGISTERED = "site_not_registered"


def site_not_known(site_id: uuid.UUID) -> NotFound:
    return NotFound(
        f"site {site_id} not found: trading knows a site of your org once device-service has registered "
        "a device on it (device.registered); a device registered a moment ago may take a few seconds to "
        "reach trading, retry then",
        details={"reason": NOT_REGISTERED},
    )


def not_configured(site_id: uuid.UUID) -> NotFound:
    return NotFound(f"site {site_id} has no battery configured in trading (PUT /sites/{site_id}/battery)")


class SiteService:
    def __init__(self, registry: SiteRegistry, sites: SiteRepository) -> None:
        self.registry = registry
        self.sites = sites

    async def require_registered(self, org_id: uuid.UUID, site_id: uuid.UUID) -> None:
        """Raise the 404 unless ``site_id`` is registered to ``org_id``."""
        if await self.registry.org_of(site_id) != org_id:
            raise site_not_known(site_id)

    async def configured(self, org_id: uuid.UUID, site_id: uuid.UUID) -> SiteConfig:
        """The org's configured site, or 404 (not registered to the org; then not configured)."""
        await self.require_registered(org_id, site_id)
        site = await self.sites.get(site_id)
        if site is None or site.org_id != org_id:
            raise not_configured(site_id)
        return site

    async def configure_battery(
        self, org_id: uuid.UUID, site_id: uuid.UUID, body: BatteryConfig
    ) -> BatteryConfig:
        await self.require_registered(org_id, site_id)
        row = await self.sites.upsert(org_id, site_id, body.model_dump())
        if row is None:  # configured by another org before trading checked sites (see README)
            raise NotFound(
                f"site {site_id} cannot be configured: trading holds an older configuration of it that is "
                "not your org's; an operator must remove it"
            )
        return BatteryConfig.model_validate({k: getattr(row, k) for k in BatteryConfig.model_fields})

    async def of_org(self, org_id: uuid.UUID) -> list[uuid.UUID]:
        return await self.sites.of_org(org_id)
