"""Short human-readable reasons for each slot of a plan and for every relaxed limit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nattery_trading.optimiser.model import FloatArray, Plan, PlanInput, Relaxation, RelaxationKind

EPS = 1e-3


def _hhmm(inp: PlanInput, i: int) -> str:
    """The time of day slot ``i`` starts, in the zone of ``inp.start`` (arithmetic: strftime per held
    slot was a tenth of the explanation's time)."""
    minute = (inp.start.hour * 60 + inp.start.minute + inp.slot_minutes * i) % 1440
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _bucket(pct: float) -> int:
    """Round a share up to a readable bucket: 5, 10, 20, 30 ... 100."""
    for b in (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100):
        if pct <= b:
            return b
    return 100


def explain_plan(inp: PlanInput, plan: Plan) -> list[str]:
    t = inp.slots
    pi = np.asarray(inp.import_price_p_per_kwh, dtype=np.float64)
    pe = np.asarray(inp.export_price_p_per_kwh, dtype=np.float64)
    load = np.asarray(inp.load_kw, dtype=np.float64)
    pv = np.asarray(inp.pv_kw, dtype=np.float64)
    b = inp.battery
    rt = b.round_trip_efficiency
    deg = b.degradation_p_per_kwh
    floor_pct = max(b.soc_min_pct, inp.strategy.reserve_soc_pct)
    dc = inp.strategy.demand_charge
    # best value of a kWh later in the horizon (displacing an import or exporting), from each slot on
    later_value = np.maximum(pi, pe)
    best_after = np.full(t, -math.inf)
    best_after_at = np.full(t, -1)
    run, run_at = -math.inf, -1
    for i in range(t - 1, -1, -1):
        best_after[i], best_after_at[i] = run, run_at
        if later_value[i] > run:
            run, run_at = float(later_value[i]), i
    relaxed = {r.slot: r for r in plan.relaxations}
    forced = _forced_slots(inp)
    out: list[str] = []
    soc_before = np.concatenate([[inp.initial_soc_pct], plan.soc_pct[:-1]]).tolist()
    # Python floats for the per-slot loop (numpy scalars cost a microsecond an operation: this runs for
    # every slot of every plan of a fleet re-plan); the arrays stay for the whole-horizon comparisons.
    pi_l, pe_l, load_l, pv_l = pi.tolist(), pe.tolist(), load.tolist(), pv.tolist()
    charge, discharge = plan.charge_kw.tolist(), plan.discharge_kw.tolist()
    imports, exports = plan.import_kw.tolist(), plan.export_kw.tolist()
    curtailed = plan.curtailed_pv_kw.tolist()
    best_after_l, best_after_at_l = best_after.tolist(), best_after_at.tolist()
    peak = plan.peak_import_kw
    for i in range(t):
        ch, dis = charge[i], discharge[i]
        imp, exp_ = imports[i], exports[i]
        surplus = max(pv_l[i] - load_l[i], 0.0)
        if i in forced:
            f = forced[i]
            r = (
                f"{'dispatch' if f[1] else 'manual window'}: {'discharging' if f[0] > 0 else 'charging'} "
                f"at {abs(f[0]):.1f} kW as instructed"
            )
        elif ch > EPS:
            if imp > EPS and pi_l[i] < 0:
                r = f"charging: import price is negative ({pi_l[i]:.1f}p), paid to take energy"
            elif imp > EPS and ch > surplus + EPS:
                pct = float((pi < pi_l[i]).mean() * 100.0)
                r = f"charging: import {pi_l[i]:.1f}p is in the cheapest {_bucket(pct + 100.0 / t)}% of the horizon"
            else:
                r = f"charging from PV surplus {surplus:.1f} kW (export pays only {pe_l[i]:.1f}p)"
        elif dis > EPS:
            if exp_ > EPS:
                r = f"discharging to export at {pe_l[i]:.1f}p"
            elif dc is not None and peak is not None and imp >= peak - EPS:
                r = f"discharging to keep import at the {peak:.1f} kW peak (demand charge)"
            else:
                r = f"discharging to cover load at {pi_l[i]:.1f}p"
        else:
            cost_in = pi_l[i] if surplus <= EPS else pe_l[i]
            best = best_after_l[i]
            if best_after_at_l[i] < 0:
                r = "holding: end of horizon"
            else:
                spread = best - cost_in
                need = best * (1 - rt) + deg
                if spread * 1.0 < need + EPS and soc_before[i] <= floor_pct + 0.5:
                    r = f"holding: spread {spread:.1f}p below round-trip loss + degradation {need:.1f}p"
                elif soc_before[i] >= b.soc_max_pct - 0.5:
                    r = f"holding: battery full, keeping it for {_hhmm(inp, int(best_after_at_l[i]))} at {best:.1f}p"
                elif soc_before[i] <= floor_pct + 0.5:
                    cheapest = int(i + np.argmin(pi[i:]))
                    r = f"holding: at minimum SOC, cheaper import at {_hhmm(inp, cheapest)} ({pi[cheapest]:.1f}p)"
                else:
                    r = (
                        f"holding: keeping {soc_before[i]:.0f}% for {_hhmm(inp, int(best_after_at_l[i]))} "
                        f"at {best:.1f}p"
                    )
        if curtailed[i] > EPS:
            r += f"; curtailing {curtailed[i]:.1f} kW PV (export {pe_l[i]:.1f}p)"
        if i in relaxed:
            r += f"; RELAXED {relaxed[i].kind.value}: {relaxed[i].reason}"
        out.append(r)
    return out


def _forced_slots(inp: PlanInput) -> dict[int, tuple[float, bool]]:
    out: dict[int, tuple[float, bool]] = {}
    s = inp.strategy
    if not (s.windows or s.dispatches):
        return out
    for i in range(inp.slots):
        a = inp.slot_start(i)
        e = inp.slot_start(i + 1)
        for w in s.windows:
            if w.start < e and w.end > a and w.mode in ("charge", "discharge"):
                out[i] = (abs(w.power_kw) * (1 if w.mode == "discharge" else -1), False)
        for d in s.dispatches:
            if d.start < e and d.end > a:
                out[i] = (d.power_kw, True)
    return out


@dataclass(frozen=True)
class Slacks:
    """The LP's penalised slack columns, one value per slot (what each relaxation explains)."""

    soc_below_min_kwh: FloatArray
    soc_above_max_kwh: FloatArray
    import_over_limit_kw: FloatArray
    export_over_limit_kw: FloatArray
    forced_over_kw: FloatArray
    forced_under_kw: FloatArray


def explain_relaxations(
    inp: PlanInput, plan: Plan, floor_kwh: float, ceil_kwh: float, forced: FloatArray, slacks: Slacks
) -> list[Relaxation]:
    b, site = inp.battery, inp.site
    cap = b.capacity_kwh
    load = np.asarray(inp.load_kw)
    pv = np.asarray(inp.pv_kw)
    slo, shi = np.asarray(slacks.soc_below_min_kwh), np.asarray(slacks.soc_above_max_kwh)
    gix, gex = np.asarray(slacks.import_over_limit_kw), np.asarray(slacks.export_over_limit_kw)
    deviation = np.asarray(slacks.forced_over_kw) - np.asarray(slacks.forced_under_kw)

    out: list[Relaxation] = []
    floor_pct = floor_kwh / cap * 100
    floor_name = "reserve" if inp.strategy.reserve_soc_pct > b.soc_min_pct else "minimum"
    # only the slots where some slack is used (almost never any): the loop below is per such slot
    relaxed = (slo > EPS) | (shi > EPS) | (gix > EPS) | (gex > EPS) | (np.abs(deviation) > EPS)
    for i in np.flatnonzero(relaxed).tolist():
        if slo[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.SOC_BELOW_MIN,
                    float(slo[i]),
                    f"SOC {plan.soc_pct[i]:.1f}% is below the {floor_name} {floor_pct:.0f}%: it started at "
                    f"{inp.initial_soc_pct:.1f}% and can charge at most {b.max_charge_kw:.1f} kW",
                )
            )
        if shi[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.SOC_ABOVE_MAX,
                    float(shi[i]),
                    f"SOC {plan.soc_pct[i]:.1f}% is above the maximum {ceil_kwh / cap * 100:.0f}%: it started at "
                    f"{inp.initial_soc_pct:.1f}% and can discharge at most {b.max_discharge_kw:.1f} kW",
                )
            )
        if gix[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.IMPORT_LIMIT,
                    float(gix[i]),
                    f"import {plan.import_kw[i]:.1f} kW exceeds the {site.import_limit_kw:.1f} kW limit: load "
                    f"{load[i]:.1f} kW is more than PV {pv[i]:.1f} kW + battery + limit can cover",
                )
            )
        if gex[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.EXPORT_LIMIT,
                    float(gex[i]),
                    f"export {plan.export_kw[i]:.1f} kW exceeds the {site.export_limit_kw:.1f} kW limit "
                    f"(forced discharge {forced[i]:.1f} kW, PV {pv[i]:.1f} kW)",
                )
            )
        dev = float(deviation[i])
        if abs(dev) > EPS:
            why = []
            if plan.soc_pct[i] <= floor_pct + 0.1 and forced[i] > 0:
                why.append(f"SOC at its {floor_name} {floor_pct:.0f}%")
            if plan.soc_pct[i] >= ceil_kwh / cap * 100 - 0.1 and forced[i] < 0:
                why.append("battery full")
            if forced[i] > b.max_discharge_kw + EPS or -forced[i] > b.max_charge_kw + EPS:
                why.append("beyond the battery's power limit")
            if forced[i] > 0 and plan.export_kw[i] >= site.export_limit_kw - EPS:
                why.append(f"export limit {site.export_limit_kw:.1f} kW")
            if forced[i] < 0 and plan.import_kw[i] >= site.import_limit_kw - EPS:
                why.append(f"import limit {site.import_limit_kw:.1f} kW")
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.FORCED_POWER,
                    abs(dev),
                    f"forced {forced[i]:+.1f} kW delivered as {plan.battery_power_kw[i]:+.1f} kW: "
                    + (", ".join(why) or "other limits"),
                )
            )
    return out
