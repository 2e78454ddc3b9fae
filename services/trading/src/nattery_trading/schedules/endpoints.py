"""Schedules: operators re-plan a site now and post actuals, viewers read the latest schedule and
planned vs actual; anyone may plan without saving (what-if)."""

from __future__ import annotations

import dataclasses
import math
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, status

from nattery_shared.auth import Operator, Viewer
from nattery_shared.errors import NotFound, Unprocessable
from nattery_shared.validation import IsoDatetime
from nattery_trading.deps import PlanningDep, SitesDep
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
from nattery_trading.schedules.repository import ScheduleVersion
from nattery_trading.schedules.schemas import ActualIn, PlannedVsActual, PreviewIn, ScheduleOut

router = APIRouter(tags=["trading"])


def _out(v: ScheduleVersion) -> ScheduleOut:
    return ScheduleOut.model_validate(
        {**dataclasses.asdict(v.head), "slots": [dataclasses.asdict(s) for s in v.slots]}
    )


@router.post("/sites/{site_id}/plan", summary="Re-plan now and publish the schedule (operator)")
async def plan_now(
    site_id: uuid.UUID, principal: Operator, planning: PlanningDep, sites: SitesDep
) -> ScheduleOut:
    await sites.configured(principal.org_id, site_id)
    out = await planning.plan_site(site_id, f"requested by {principal.subject}")
    if out is None:  # stopped and already held: the hold stays
        out = await planning.latest(site_id)
        assert out is not None
    return _out(out)


@router.get("/sites/{site_id}/schedule", summary="The latest schedule version with per-slot reasons")
async def get_schedule(
    site_id: uuid.UUID, principal: Viewer, planning: PlanningDep, sites: SitesDep
) -> ScheduleOut:
    await sites.configured(principal.org_id, site_id)
    got = await planning.latest(site_id)
    if got is None:
        raise NotFound(f"site {site_id} has no schedule yet")
    return _out(got)


@router.post(
    "/sites/{site_id}/actuals",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Record what the battery, load and PV actually did in slots (operator or integrations); "
    "a SOC off the plan by more than the drift threshold re-plans",
)
async def post_actuals(
    site_id: uuid.UUID, body: list[ActualIn], principal: Operator, planning: PlanningDep, sites: SitesDep
) -> None:
    await sites.configured(principal.org_id, site_id)
    await planning.record_actuals(site_id, body)


@router.get("/sites/{site_id}/schedule/compare", summary="Planned vs actual per slot")
async def compare(
    site_id: uuid.UUID,
    principal: Viewer,
    planning: PlanningDep,
    sites: SitesDep,
    start: Annotated[IsoDatetime, Query(alias="from")],
    end: Annotated[IsoDatetime, Query(alias="to")],
) -> list[PlannedVsActual]:
    await sites.configured(principal.org_id, site_id)
    return [
        PlannedVsActual.model_validate(r, from_attributes=True)
        for r in await planning.planned_vs_actual(site_id, start, end)
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
