"""The markets area's jobs and routes (``areas.Area``).

What to fetch comes from the orgs' enabled connections (``connections/``): Octopus (``product_code``,
optional ``export_product_code``, ``region``), ENTSO-E (``bidding_zone`` + secret ``security_token``),
Modo (secret ``token``); Elexon is public and always fetched. Targets shared by several orgs are
fetched once. Each job goes on with its other targets when one fails, then reports the failure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from nattery_integration.areas import Area
from nattery_integration.connections.service import enabled_connections
from nattery_integration.jobs.registry import JobContext, JobResult, JobSpec
from nattery_integration.jobs.schedules import every
from nattery_integration.markets.endpoints import router
from nattery_integration.markets.prices import IncompletePrices
from nattery_integration.markets.service import MarketsService
from nattery_integration.providers.errors import ProviderError, ProviderRejected

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext

log = logging.getLogger(__name__)

NOT_YET_RETRY_S = 60.0  # a day not yet published: look again in a minute


async def _each(targets: list[tuple[str, Callable[[], Awaitable[object]]]]) -> JobResult:
    """Run every target; failures and unpublished days are reported after all have been tried."""
    if not targets:
        return JobResult.ok("no connection asks for it")
    failed: list[str] = []
    missing: list[str] = []
    for name, run in targets:
        try:
            await run()
        except IncompletePrices as e:
            missing.append(str(e))
        except (ProviderError, ValueError) as e:
            log.warning("%s: %s", name, e)
            failed.append(f"{name}: {e}")
    if failed:
        return JobResult.failed("; ".join(failed)[:2000])
    if missing:
        return JobResult.not_yet("; ".join(missing)[:2000], retry_in_s=NOT_YET_RETRY_S)
    return JobResult.ok(f"{len(targets)} target(s) up to date")


def jobs(ctx: IntegrationContext) -> list[JobSpec]:
    svc = MarketsService(ctx.pool, poke=ctx.relay.poke)

    async def octopus(_: JobContext) -> JobResult:
        targets: set[tuple[str, str, str]] = set()
        for c in await enabled_connections(ctx, "octopus"):
            region = str(c.settings.get("region", ""))
            targets.add((str(c.settings.get("product_code", "AGILE-24-10-01")), region, "import"))
            if c.settings.get("export_product_code"):
                targets.add((str(c.settings["export_product_code"]), region, "export"))
        client = ctx.clients.get("octopus")
        return await _each(
            [
                (f"octopus {p} {r} {d}", lambda p=p, r=r, d=d: svc.octopus_due(client, p, r, d))  # type: ignore[misc]
                for p, r, d in sorted(targets)
            ]
        )

    async def entsoe(_: JobContext) -> JobResult:
        zones: dict[str, str] = {}
        for c in await enabled_connections(ctx, "entsoe"):
            zones.setdefault(str(c.settings.get("bidding_zone", "")), c.secrets.get("security_token", ""))
        client = ctx.clients.get("entsoe")
        return await _each(
            [
                (f"entsoe {z}", lambda z=z, t=t: svc.entsoe_due(client, t, z))  # type: ignore[misc]
                for z, t in sorted(zones.items())
            ]
        )

    async def elexon(_: JobContext) -> JobResult:
        client = ctx.clients.get("elexon")
        return await _each([("elexon system prices", lambda: svc.elexon_niv(client))])

    async def modo(_: JobContext) -> JobResult:
        # NIV is the same for every org: one org's key is enough, the first one Modo accepts (one org's
        # revoked key must not stop everyone's NIV)
        tokens = list(
            dict.fromkeys(c.secrets.get("token", "") for c in await enabled_connections(ctx, "modo"))
        )
        client = ctx.clients.get("modo")

        async def niv() -> int:
            for i, token in enumerate(tokens):
                try:
                    return await svc.modo_niv(client, token)
                except ProviderRejected as e:
                    if e.status_code not in (401, 403) or i == len(tokens) - 1:
                        raise
                    log.warning("modo refused one org's key (HTTP %d); trying the next", e.status_code)
            return 0

        return await _each([("modo niv", niv)] if tokens else [])

    half_hourly = timedelta(minutes=30)
    return [
        # Every minute: a new connection gets its prices within a minute, tomorrow's Agile day
        # (published around 16:00 UK) soon after it appears; a day already complete is fetched again
        # only every 30 minutes (MarketsService.recheck_after), to republish a corrected price.
        JobSpec(
            name="markets.octopus",
            handler=octopus,
            next_run=every(timedelta(minutes=1)),
            provider="octopus",
            retry_in_s=NOT_YET_RETRY_S,
        ),
        JobSpec(
            name="markets.entsoe",
            handler=entsoe,
            next_run=every(timedelta(minutes=1), offset=timedelta(seconds=30)),
            provider="entsoe",
            retry_in_s=NOT_YET_RETRY_S,
        ),
        # Settlement periods end on :00 and :30; Elexon's first system price follows within minutes.
        JobSpec(
            name="markets.elexon_niv",
            handler=elexon,
            next_run=every(half_hourly, offset=timedelta(minutes=10)),
            provider="elexon",
        ),
        JobSpec(
            name="markets.modo_niv",
            handler=modo,
            next_run=every(half_hourly, offset=timedelta(minutes=12)),
            provider="modo",
        ),
    ]


AREA = Area(name="markets", jobs=jobs, routers=[router])
