"""Site rules: a site-keyed request is served only for a site registered to the caller's org.

The integration service learns sites from device-service's ``device.registered`` (``consumers.py``),
as trading does; it never calls device-service. An unknown site and another org's site get the same
404, so the answer tells nothing about other orgs' sites. A site registered a moment ago may not be
known yet (the event arrives within seconds): the 404 says so.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from nattery_integration.sites.repository import Row, SitesRepository
from nattery_integration.sites.schemas import PvArrayIn
from nattery_shared.errors import NotFound

log = logging.getLogger(__name__)

NOT_REGISTERED = "site_not_registered"


def site_not_known(site_id: uuid.UUID) -> NotFound:
    return NotFound(
        f"site {site_id} not found: the integration service knows a site of your org once device-service "
        "has registered a device on it (device.registered); a device registered a moment ago may take a "
        "few seconds to arrive, retry then",
        details={"reason": NOT_REGISTERED},
    )


class SitesService:
    def __init__(self, repo: SitesRepository) -> None:
        self.repo = repo

    async def put_pv_array(self, org_id: uuid.UUID, site_id: uuid.UUID, body: PvArrayIn, by: str) -> Row:
        row = await self.repo.put_pv_array(org_id, site_id, body.model_dump(), by)
        if row is None:
            raise site_not_known(site_id)
        log.info(
            "site %s PV array set: %.2f kWp, tilt %g, azimuth %g",
            site_id,
            body.kwp,
            body.tilt_deg,
            body.azimuth_deg,
        )
        return row

    async def get_pv_array(self, org_id: uuid.UUID, site_id: uuid.UUID) -> Row:
        row = await self.repo.get_pv_array(org_id, site_id)
        if row is None:
            if await self.repo.org_of(site_id) == org_id:
                raise NotFound(
                    f"site {site_id} has no PV array configured: PUT one first",
                    details={"reason": "no_pv_array"},
                )
            raise site_not_known(site_id)
        return row

    async def pv_arrays(self) -> list[dict[str, Any]]:
        return await self.repo.pv_arrays()
