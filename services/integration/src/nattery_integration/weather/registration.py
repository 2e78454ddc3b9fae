"""The weather area's job: every hour, each site with a PV array gets its weather and PV forecast."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from nattery_integration.areas import Area
from nattery_integration.jobs.registry import JobContext, JobResult, JobSpec
from nattery_integration.jobs.schedules import every
from nattery_integration.providers.errors import ProviderError
from nattery_integration.sites.repository import SitesRepository
from nattery_integration.weather.service import WeatherService

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext

log = logging.getLogger(__name__)


def jobs(ctx: IntegrationContext) -> list[JobSpec]:
    svc = WeatherService(ctx.pool, poke=ctx.relay.poke)
    sites = SitesRepository(ctx.pool)

    async def forecasts(_: JobContext) -> JobResult:
        arrays = await sites.pv_arrays()
        if not arrays:
            return JobResult.ok("no site has a PV array")
        client = ctx.clients.get("open_meteo")
        failed, changed = [], 0
        for row in arrays:
            try:
                changed += await svc.site(client, row)
            except ProviderError as e:  # one site's failure never stops the others
                log.warning("weather for site %s: %s", row["site_id"], e)
                failed.append(f"site {row['site_id']}: {e}")
        if failed:
            return JobResult.failed("; ".join(failed)[:2000])
        return JobResult.ok(f"{len(arrays)} site(s), {changed} forecast(s) published")

    return [
        JobSpec(
            name="weather.open_meteo",
            handler=forecasts,
            next_run=every(timedelta(hours=1), offset=timedelta(minutes=15)),
            provider="open_meteo",
        )
    ]


AREA = Area(name="weather", jobs=jobs)
