"""Site rules: a site-keyed request is served only for a site registered to the caller's org.

Trading learns sites from device-service's ``device.registered`` (``consumers.py``); it never calls
device-service. Unknown and another org's site get the same 404 (message, code and details), so the
answer tells nothing about sites of other orgs. A site whose first device was registered a moment ago
is not known yet (device-service's outbox relay publishes within about a second, then the
``trading.sites`` consumer applies it): the 404 says so, and a client retries.
"""

from __future__ import annotations

import uuid

from nattery_shared.errors import NotFound
from nattery_trading.sites.repository import SiteRegistry

NOT_REGISTERED = "site_not_registered"


def site_not_known(site_id: uuid.UUID) -> NotFound:
    return NotFound(
        f"site {site_id} not found: trading knows a site of your org once device-service has registered "
        "a device on it (device.registered); a device registered a moment ago may take a few seconds to "
        "reach trading, retry then",
        details={"reason": NOT_REGISTERED},
    )


async def require_org_site(registry: SiteRegistry, org_id: uuid.UUID, site_id: uuid.UUID) -> None:
    """Raise the 404 unless ``site_id`` is registered to ``org_id``."""
    if await registry.org_of(site_id) != org_id:
        raise site_not_known(site_id)
