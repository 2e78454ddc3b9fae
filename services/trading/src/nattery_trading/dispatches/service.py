"""Dispatch and emergency-stop rules.

- A provider's dispatch (``dispatch.received``) is accepted when the site is trading's, the power is
  within the battery's limits and no emergency stop holds the site; the decision is stored and announced
  (``dispatch.status_changed``, through the outbox) once, and an accepted one re-plans the site.
- An emergency stop (a site, or every site of the org) holds at once: the hold schedules are stored and
  published before the request returns (not queued behind other jobs); queued jobs for a stopped, held
  site are then dropped (``schedules.service``). Releasing it re-plans the sites.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from nattery_contracts.events import DispatchReceived, DispatchStatus
from nattery_shared.errors import NotFound
from nattery_trading.dispatches import announcements
from nattery_trading.dispatches.repository import DispatchRepository, StopRow
from nattery_trading.schedules.queue import job_key
from nattery_trading.schedules.service import PlanningService
from nattery_trading.sites.repository import SiteRepository

log = logging.getLogger(__name__)


class DispatchService:
    def __init__(self, repo: DispatchRepository, planning: PlanningService) -> None:
        self.repo = repo
        self.planning = planning
        self.sites = SiteRepository(repo.pool)

    async def receive_dispatch(self, d: DispatchReceived) -> DispatchStatus | None:
        site = await self.sites.get(d.site_id)
        power_kw = d.battery_power_w / 1000.0
        reason = None
        status = DispatchStatus.ACCEPTED
        if site is None or site.org_id != d.org_id:
            status, reason = DispatchStatus.REJECTED, "site unknown to trading"
        elif power_kw > site.max_discharge_kw + 1e-9 or -power_kw > site.max_charge_kw + 1e-9:
            status, reason = (
                DispatchStatus.REJECTED,
                (
                    f"{power_kw:+.2f} kW is beyond the battery's limits "
                    f"(-{site.max_charge_kw:.2f}..+{site.max_discharge_kw:.2f} kW)"
                ),
            )
        elif await self.repo.active_stop(d.org_id, d.site_id) is not None:
            status, reason = DispatchStatus.REJECTED, "emergency stop active"
        announcement = announcements.status_changed(
            d.dispatch_id, d.org_id, d.site_id, status, reason, datetime.now(UTC)
        )
        new = await self.repo.insert(
            {
                "dispatch_id": d.dispatch_id,
                "org_id": d.org_id,
                "site_id": d.site_id,
                "provider": d.provider,
                "battery_power_kw": power_kw,
                "start_at": d.start,
                "end_at": d.end,
                "status": status.value,
                "reason": reason,
            },
            announcement if self.planning.relay is not None else None,
        )
        if not new:
            return None  # redelivery: already decided and announced
        await self.planning.flush()
        if status == DispatchStatus.ACCEPTED:
            await self.planning.request_replan(
                [d.site_id], f"dispatch {d.dispatch_id}", f"dispatch:{d.dispatch_id}"
            )
        return status

    async def emergency_stop(
        self, org_id: uuid.UUID, site_id: uuid.UUID | None, reason: str, by: str
    ) -> StopRow:
        """Stop now: the hold schedules are stored and published before this returns."""
        if site_id is not None:
            site = await self.sites.get(site_id)
            if site is None or site.org_id != org_id:
                raise NotFound(f"site {site_id} not found")
        stop = await self.repo.create_stop(org_id, site_id, reason, by)
        sites = [site_id] if site_id is not None else await self.sites.of_org(org_id)
        keyed = [(s, job_key(s, f"stop:{stop.stop_id}")) for s in sites]
        for (s, _), outcome in zip(
            keyed, await self.planning.plan_many(keyed, "emergency stop"), strict=True
        ):
            if isinstance(outcome, Exception):
                log.error("hold of %s after emergency stop %s failed: %s", s, stop.stop_id, outcome)
        return stop

    async def release_stop(self, org_id: uuid.UUID, stop_id: uuid.UUID, by: str) -> StopRow:
        stop = await self.repo.release_stop(org_id, stop_id, by)
        if stop is None:
            raise NotFound(f"no active emergency stop {stop_id}")
        await self.planning.replan_sites(
            org_id, stop.site_id, "emergency stop released", f"release:{stop_id}"
        )
        return stop

    async def stops(self, org_id: uuid.UUID, active_only: bool) -> list[StopRow]:
        return await self.repo.stops(org_id, active_only)
