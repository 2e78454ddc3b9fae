"""Sites: admins configure a registered site's battery and grid limits."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from nattery_shared.auth import Admin
from nattery_trading.deps import SitesDep
from nattery_trading.sites.schemas import BatteryConfig

router = APIRouter(tags=["trading"])


@router.put("/sites/{site_id}/battery", summary="Configure a site's battery and grid limits (admin)")
async def put_battery(
    site_id: uuid.UUID, body: BatteryConfig, principal: Admin, sites: SitesDep
) -> BatteryConfig:
    return await sites.configure_battery(principal.org_id, site_id, body)
