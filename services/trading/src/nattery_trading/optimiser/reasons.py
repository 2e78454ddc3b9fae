"""Short human-readable reasons for each slot of a plan and for every relaxed limit."""

from __future__ import annotations

import math

import numpy as np

from nattery_trading.optimiser.model import FloatArray, Plan, PlanInput, Relaxation, RelaxationKind

EPS = 1e-3


def _hhmm(inp: PlanInput, i: int) -> str:
    return inp.slot_start(i).strftime("%H:%M")


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
    soc_before = np.concatenate([[inp.initial_soc_pct], plan.soc_pct[:-1]])
    for i in range(t):
        ch, dis = plan.charge_kw[i], plan.discharge_kw[i]
        imp, exp_ = plan.import_kw[i], plan.export_kw[i]
        surplus = max(pv[i] - load[i], 0.0)
        if i in forced:
            f = forced[i]
            r = (
                f"{'dispatch' if f[1] else 'manual window'}: {'discharging' if f[0] > 0 else 'charging'} "
                f"at {abs(f[0]):.1f} kW as instructed"
            )
        elif ch > EPS:
            if imp > EPS and pi[i] < 0:
                r = f"charging: import price is negative ({pi[i]:.1f}p), paid to take energy"
            elif imp > EPS and ch > surplus + EPS:
                pct = float((pi < pi[i]).mean() * 100.0)
                r = f"charging: import {pi[i]:.1f}p is in the cheapest {_bucket(pct + 100.0 / t)}% of the horizon"
            else:
                r = f"charging from PV surplus {surplus:.1f} kW (export pays only {pe[i]:.1f}p)"
        elif dis > EPS:
            if exp_ > EPS:
                r = f"discharging to export at {pe[i]:.1f}p"
            elif dc is not None and plan.peak_import_kw is not None and imp >= plan.peak_import_kw - EPS:
                r = f"discharging to keep import at the {plan.peak_import_kw:.1f} kW peak (demand charge)"
            else:
                r = f"discharging to cover load at {pi[i]:.1f}p"
        else:
            cost_in = pi[i] if surplus <= EPS else pe[i]
            best = best_after[i]
            if best_after_at[i] < 0:
                r = "holding: end of horizon"
            else:
                spread = best - cost_in
                need = best * (1 - rt) + deg
                if spread * 1.0 < need + EPS and soc_before[i] <= floor_pct + 0.5:
                    r = f"holding: spread {spread:.1f}p below round-trip loss + degradation {need:.1f}p"
                elif soc_before[i] >= b.soc_max_pct - 0.5:
                    r = f"holding: battery full, keeping it for {_hhmm(inp, int(best_after_at[i]))} at {best:.1f}p"
                elif soc_before[i] <= floor_pct + 0.5:
                    cheapest = int(i + np.argmin(pi[i:]))
                    r = f"holding: at minimum SOC, cheaper import at {_hhmm(inp, cheapest)} ({pi[cheapest]:.1f}p)"
                else:
                    r = (
                        f"holding: keeping {soc_before[i]:.0f}% for {_hhmm(inp, int(best_after_at[i]))} "
                        f"at {best:.1f}p"
                    )
        if plan.curtailed_pv_kw[i] > EPS:
            r += f"; curtailing {plan.curtailed_pv_kw[i]:.1f} kW PV (export {pe[i]:.1f}p)"
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


def explain_relaxations(
    inp: PlanInput, plan: Plan, floor_kwh: float, ceil_kwh: float, forced: FloatArray, x: FloatArray
) -> list[Relaxation]:
    from nattery_trading.optimiser.lp import FN, FP, GEX, GIX, SHI, SLO

    t = inp.slots
    b, site = inp.battery, inp.site
    cap = b.capacity_kwh
    load = np.asarray(inp.load_kw)
    pv = np.asarray(inp.pv_kw)

    def v(k: int) -> FloatArray:
        return np.asarray(x[k * t : (k + 1) * t])

    out: list[Relaxation] = []
    floor_pct = floor_kwh / cap * 100
    floor_name = "reserve" if inp.strategy.reserve_soc_pct > b.soc_min_pct else "minimum"
    for i in range(t):
        if v(SLO)[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.SOC_BELOW_MIN,
                    float(v(SLO)[i]),
                    f"SOC {plan.soc_pct[i]:.1f}% is below the {floor_name} {floor_pct:.0f}%: it started at "
                    f"{inp.initial_soc_pct:.1f}% and can charge at most {b.max_charge_kw:.1f} kW",
                )
            )
        if v(SHI)[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.SOC_ABOVE_MAX,
                    float(v(SHI)[i]),
                    f"SOC {plan.soc_pct[i]:.1f}% is above the maximum {ceil_kwh / cap * 100:.0f}%: it started at "
                    f"{inp.initial_soc_pct:.1f}% and can discharge at most {b.max_discharge_kw:.1f} kW",
                )
            )
        if v(GIX)[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.IMPORT_LIMIT,
                    float(v(GIX)[i]),
                    f"import {plan.import_kw[i]:.1f} kW exceeds the {site.import_limit_kw:.1f} kW limit: load "
                    f"{load[i]:.1f} kW is more than PV {pv[i]:.1f} kW + battery + limit can cover",
                )
            )
        if v(GEX)[i] > EPS:
            out.append(
                Relaxation(
                    i,
                    RelaxationKind.EXPORT_LIMIT,
                    float(v(GEX)[i]),
                    f"export {plan.export_kw[i]:.1f} kW exceeds the {site.export_limit_kw:.1f} kW limit "
                    f"(forced discharge {forced[i]:.1f} kW, PV {pv[i]:.1f} kW)",
                )
            )
        dev = float(v(FP)[i] - v(FN)[i])
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
