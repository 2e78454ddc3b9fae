"""Sites REST API (thin): a site's location and PV array. Another org's site answers 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from nattery_integration.deps import get_ctx
from nattery_integration.sites.repository import SitesRepository
from nattery_integration.sites.schemas import PvArrayIn, PvArrayOut
from nattery_integration.sites.service import SitesService
from nattery_shared.auth import Admin, Viewer

router = APIRouter(tags=["sites"])


def get_sites(request: Request) -> SitesService:
    return SitesService(SitesRepository(get_ctx(request).pool))


SitesDep = Annotated[SitesService, Depends(get_sites)]


@router.put("/sites/{site_id}/pv-array", response_model=PvArrayOut)
async def put_pv_array(site_id: uuid.UUID, body: PvArrayIn, principal: Admin, sites: SitesDep) -> PvArrayOut:
    """Set the site's location and PV array (used for its weather and PV forecast)."""
    row = await sites.put_pv_array(principal.org_id, site_id, body, principal.subject)
    return PvArrayOut.model_validate(row)


@router.get("/sites/{site_id}/pv-array", response_model=PvArrayOut)
async def get_pv_array(site_id: uuid.UUID, principal: Viewer, sites: SitesDep) -> PvArrayOut:
    return PvArrayOut.model_validate(await sites.get_pv_array(principal.org_id, site_id))
