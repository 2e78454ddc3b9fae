"""Trading REST API (thin: rules live in the planning service).

Every route keyed by a site (in the path, or ``site_id`` in a body) first checks that the site is
registered to the caller's org (``sites/service.py``): an unknown site and another org's site get the
same 404."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, status

from nattery_shared.auth import Admin, Operator, Principal, Viewer
from nattery_shared.errors import NotFound, Unprocessable
from nattery_shared.validation import IsoDatetime
from nattery_trading.optimiser import (
    Battery,
    DemandCharge,
    PlanInput,
    Site,
    Strategy,
    TimeWindow,
    WindowMode,
    solve,
)
from nattery_trading.planning.repository import Repository, Row
from nattery_trading.planning.schemas import (
    ActualIn,
    BatteryConfig,
    EmergencyStopIn,
    EmergencyStopOut,
    PlannedVsActual,
    PreviewIn,
    ScheduleOut,
    StrategyIn,
    TariffIn,
    TariffOut,
)
from nattery_trading.planning.service import PlanningService
from nattery_trading.sites.repository import SiteRegistry
from nattery_trading.sites.service import require_org_site

router = APIRouter(tags=["trading"])


def get_planning(request: Request) -> PlanningService:
    planning: PlanningService = request.state.planning
    return planning


def get_sites(request: Request) -> SiteRegistry:
    sites: SiteRegistry = request.state.sites
    return sites


PlanningDep = Annotated[PlanningService, Depends(get_planning)]
SitesDep = Annotated[SiteRegistry, Depends(get_sites)]


def _not_configured(site_id: uuid.UUID) -> NotFound:
    return NotFound(f"site {site_id} has no battery configured in trading (PUT /sites/{site_id}/battery)")


async def _own_site(sites: SiteRegistry, repo: Repository, principal: Principal, site_id: uuid.UUID) -> Row:
    """The caller's org's configured site, or 404 (not registered to the org; then not configured)."""
    await require_org_site(sites, principal.org_id, site_id)
    site = await repo.get_site(site_id)
    if site is None or site["org_id"] != principal.org_id:
        raise _not_configured(site_id)
    return site


@router.put("/sites/{site_id}/battery", summary="Configure a site's battery and grid limits (admin)")
async def put_battery(
    site_id: uuid.UUID, body: BatteryConfig, principal: Admin, planning: PlanningDep, sites: SitesDep
) -> BatteryConfig:
    await require_org_site(sites, principal.org_id, site_id)
    row = await planning.repo.upsert_site(principal.org_id, site_id, body.model_dump())
    if row is None:  # configured by another org before trading checked sites (see README)
        raise NotFound(
            f"site {site_id} cannot be configured: trading holds an older configuration of it that is "
            "not your org's; an operator must remove it"
        )
    return BatteryConfig.model_validate({k: row[k] for k in BatteryConfig.model_fields})


@router.put("/sites/{site_id}/strategy", summary="Set a site's strategy; re-plans when it can")
async def put_strategy(
    site_id: uuid.UUID, body: StrategyIn, principal: Operator, planning: PlanningDep, sites: SitesDep
) -> StrategyIn:
    await _own_site(sites, planning.repo, principal, site_id)
    row = await planning.repo.set_strategy(site_id, body.model_dump(mode="json"), principal.subject)
    version = row["updated_at"].isoformat() if row else uuid.uuid4().hex
    await planning.replan_sites(principal.org_id, site_id, "strategy changed", f"strategy:{version}")
    return body


@router.get("/sites/{site_id}/strategy")
async def get_strategy(
    site_id: uuid.UUID, principal: Viewer, planning: PlanningDep, sites: SitesDep
) -> StrategyIn:
    await _own_site(sites, planning.repo, principal, site_id)
    row = await planning.repo.get_strategy(site_id)
    if row is None:
        return StrategyIn()
    return StrategyIn.model_validate({k: row[k] for k in StrategyIn.model_fields})


@router.post("/tariffs", status_code=status.HTTP_201_CREATED, summary="Create a tariff (admin)")
async def create_tariff(body: TariffIn, principal: Admin, planning: PlanningDep) -> TariffOut:
    row = await planning.repo.create_tariff(principal.org_id, body.model_dump())
    return TariffOut.model_validate(row, from_attributes=False)


@router.get("/tariffs")
async def list_tariffs(principal: Viewer, planning: PlanningDep) -> list[TariffOut]:
    return [TariffOut.model_validate(r) for r in await planning.repo.list_tariffs(principal.org_id)]


@router.put(
    "/sites/{site_id}/tariffs/{direction}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Use a tariff for the site's import or export (admin)",
)
async def set_site_tariff(
    site_id: uuid.UUID,
    direction: str,
    tariff_id: Annotated[uuid.UUID, Query()],
    principal: Admin,
    planning: PlanningDep,
    sites: SitesDep,
) -> None:
    await _own_site(sites, planning.repo, principal, site_id)
    tariff = await planning.repo.get_tariff(tariff_id)
    if tariff is None or tariff["org_id"] != principal.org_id:
        raise NotFound(f"tariff {tariff_id} not found")
    if tariff["direction"] != direction:
        raise Unprocessable(f"tariff {tariff_id} is an {tariff['direction']} tariff")
    await planning.repo.set_site_tariff(site_id, direction, tariff_id)


@router.post("/sites/{site_id}/plan", summary="Re-plan now and publish the schedule (operator)")
async def plan_now(
    site_id: uuid.UUID, principal: Operator, planning: PlanningDep, sites: SitesDep
) -> ScheduleOut:
    await _own_site(sites, planning.repo, principal, site_id)
    out = await planning.plan_site(site_id, f"requested by {principal.subject}")
    if out is None:  # stopped and already held: the hold stays
        got = await planning.repo.latest_schedule(site_id)
        assert got is not None
        out = {**got[0], "slots": got[1]}
    return ScheduleOut.model_validate(out)


@router.get("/sites/{site_id}/schedule", summary="The latest schedule version with per-slot reasons")
async def get_schedule(
    site_id: uuid.UUID, principal: Viewer, planning: PlanningDep, sites: SitesDep
) -> ScheduleOut:
    await _own_site(sites, planning.repo, principal, site_id)
    got = await planning.repo.latest_schedule(site_id)
    if got is None:
        raise NotFound(f"site {site_id} has no schedule yet")
    head, slots = got
    return ScheduleOut.model_validate({**head, "slots": slots})


@router.post(
    "/sites/{site_id}/actuals",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Record what the battery, load and PV actually did in slots (operator or integrations); "
    "a SOC off the plan by more than the drift threshold re-plans",
)
async def post_actuals(
    site_id: uuid.UUID, body: list[ActualIn], principal: Operator, planning: PlanningDep, sites: SitesDep
) -> None:
    await _own_site(sites, planning.repo, principal, site_id)
    for a in body:
        await planning.repo.record_actual(
            site_id, a.start_at, a.battery_power_kw, a.soc_pct, a.grid_kw, a.load_kw, a.pv_kw
        )
    with_soc = [a for a in body if a.soc_pct is not None]
    if with_soc:
        last = max(with_soc, key=lambda a: a.start_at)
        assert last.soc_pct is not None
        await planning.repo.set_soc(site_id, last.soc_pct, last.start_at)
        # drifted from plan → re-plan (through the work queue), judged on the latest reading
        await planning.check_drift(site_id, last.start_at, last.soc_pct)


@router.get("/sites/{site_id}/schedule/compare", summary="Planned vs actual per slot")
async def compare(
    site_id: uuid.UUID,
    principal: Viewer,
    planning: PlanningDep,
    sites: SitesDep,
    start: Annotated[IsoDatetime, Query(alias="from")],
    end: Annotated[IsoDatetime, Query(alias="to")],
) -> list[PlannedVsActual]:
    await _own_site(sites, planning.repo, principal, site_id)
    return [
        PlannedVsActual.model_validate(r) for r in await planning.repo.planned_vs_actual(site_id, start, end)
    ]


@router.post(
    "/emergency-stops",
    status_code=status.HTTP_201_CREATED,
    summary="Hold a site (or every site of the org) until released (operator)",
)
async def create_stop(
    body: EmergencyStopIn, principal: Operator, planning: PlanningDep, sites: SitesDep
) -> EmergencyStopOut:
    if body.site_id is not None:
        await require_org_site(sites, principal.org_id, body.site_id)
    row = await planning.emergency_stop(principal.org_id, body.site_id, body.reason, principal.subject)
    return EmergencyStopOut.model_validate(row)


@router.delete("/emergency-stops/{stop_id}", summary="Release an emergency stop (operator)")
async def release_stop(stop_id: uuid.UUID, principal: Operator, planning: PlanningDep) -> EmergencyStopOut:
    return EmergencyStopOut.model_validate(
        await planning.release_stop(principal.org_id, stop_id, principal.subject)
    )


@router.get("/emergency-stops")
async def list_stops(
    principal: Viewer, planning: PlanningDep, active: Annotated[bool, Query()] = True
) -> list[EmergencyStopOut]:
    return [
        EmergencyStopOut.model_validate(r) for r in await planning.repo.list_stops(principal.org_id, active)
    ]


@router.post("/optimiser/plan", summary="Plan without saving anything (what-if, UI previews)")
async def preview(body: PreviewIn, principal: Viewer) -> dict[str, Any]:
    n = len(body.import_price_p_per_kwh)
    if not (len(body.export_price_p_per_kwh) == len(body.load_kw) == len(body.pv_kw) == n):
        raise Unprocessable("price, load and PV arrays must have the same length")
    b = body.battery
    s = body.strategy
    inp = PlanInput(
        start=body.start,
        slot_minutes=body.slot_minutes,
        import_price_p_per_kwh=np.asarray(body.import_price_p_per_kwh, dtype=np.float64),
        export_price_p_per_kwh=np.asarray(body.export_price_p_per_kwh, dtype=np.float64),
        load_kw=np.asarray(body.load_kw, dtype=np.float64),
        pv_kw=np.asarray(body.pv_kw, dtype=np.float64),
        initial_soc_pct=body.initial_soc_pct,
        battery=Battery(
            b.capacity_kwh,
            b.max_charge_kw,
            b.max_discharge_kw,
            b.charge_efficiency,
            b.discharge_efficiency,
            b.soc_min_pct,
            b.soc_max_pct,
            b.degradation_p_per_kwh,
        ),
        site=Site(
            b.import_limit_kw or math.inf, b.export_limit_kw if b.export_limit_kw is not None else math.inf
        ),
        strategy=Strategy(
            kind=s.kind,
            reserve_soc_pct=s.reserve_soc_pct,
            demand_charge=DemandCharge(s.demand_charge_p_per_kw, s.billed_peak_kw)
            if s.demand_charge_p_per_kw
            else None,
            windows=tuple(TimeWindow(w.start, w.end, WindowMode(w.mode), w.power_kw) for w in s.windows),
        ),
        terminal_value_p_per_kwh=body.terminal_value_p_per_kwh,
    )
    plan = solve(inp)
    return {
        "status": plan.status,
        "method": plan.method,
        "objective_p": None if math.isnan(plan.objective_p) else plan.objective_p,
        "solve_ms": plan.solve_ms,
        "peak_import_kw": plan.peak_import_kw,
        "battery_power_kw": plan.battery_power_kw.round(4).tolist(),
        "soc_pct": plan.soc_pct.round(3).tolist(),
        "grid_kw": plan.grid_kw.round(4).tolist(),
        "reasons": plan.reasons,
        "relaxations": [
            {"slot": r.slot, "kind": r.kind.value, "amount": r.amount, "reason": r.reason}
            for r in plan.relaxations
        ],
    }
