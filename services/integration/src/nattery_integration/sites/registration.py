"""The sites area: the ``integration.sites`` consumer and the PV-array routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nattery_integration.areas import Area
from nattery_integration.sites.consumers import SitesConsumer
from nattery_integration.sites.endpoints import router
from nattery_integration.sites.repository import SitesRepository

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext


async def start(ctx: IntegrationContext) -> None:
    await SitesConsumer(SitesRepository(ctx.pool)).register(ctx.bus)


AREA = Area(name="sites", start=start, routers=[router])
