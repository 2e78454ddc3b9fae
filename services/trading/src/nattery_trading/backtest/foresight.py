"""Perfect foresight: the exact optimum over the whole period, one LP on HiGHS.

The model is the one the back-test bills executed flows on: per slot, energy charged, discharged,
imported and exported (a meter registers import and export separately, so a slot can hold both when the
battery switches inside it), the battery's SOC bounds and power limits, and PV curtailed only where the
simulator curtails it (beyond the export cap: no curtailment without an export limit).

An instant imports or exports, never both, and the battery charges or discharges, never both; a slot may
mix such instants. So the slot's flows lie in the convex hull of the import regime and the export regime
(a disjunctive, "perspective" formulation: each regime's flows scaled by the share of the slot spent in
it), and the battery's charge and discharge share the slot's time (``C/Cmax + D/Dmax <= 1``). That hull
is exactly the set of flows a controller with perfect knowledge could produce, so its LP optimum is the
true optimum of the same model, and every executed run (whose steps each sit in one regime) is a point
of it: perfect foresight can never cost more than the optimiser's run (``run_all`` checks it).

The regimes only matter where export pays more than import (elsewhere doing both never pays); they are
added on those slots only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from nattery_trading.backtest.inputs import BacktestInput
from nattery_trading.optimiser import Battery, PlanInput, Site, lp
from nattery_trading.optimiser.model import FloatArray


@dataclass
class Foresight:
    battery_kw: FloatArray  # > 0 discharging
    soc_pct: FloatArray  # end of each slot
    grid_kw: FloatArray  # net, > 0 importing
    import_kwh: FloatArray
    export_kwh: FloatArray
    cost_p: float
    degradation_p: float
    objective_p: float
    solve_s: float
    regime_slots: int


def solve_foresight(data: BacktestInput, battery: Battery, site: Site, initial_soc_pct: float) -> Foresight:
    t0 = time.perf_counter()
    t = len(data)
    dt = data.slot_minutes / 60.0
    pf_site = Site(
        import_limit_kw=site.import_limit_kw,
        export_limit_kw=site.export_limit_kw,
        allow_pv_curtailment=math.isfinite(site.export_limit_kw),
    )
    inp = PlanInput(
        start=data.times[0],
        slot_minutes=data.slot_minutes,
        import_price_p_per_kwh=data.import_price,
        export_price_p_per_kwh=data.export_price,
        load_kw=data.load_kw,
        pv_kw=data.pv_kw,
        initial_soc_pct=initial_soc_pct,
        battery=battery,
        site=pf_site,
    )
    m = lp.build(inp)
    # no tie-break epsilons: the optimum of the true cost (they would only move ties)
    m.cost[lp.C * t : (lp.C + 1) * t] = dt * battery.degradation_p_per_kwh / 2.0
    m.cost[lp.D * t : (lp.D + 1) * t] = dt * battery.degradation_p_per_kwh / 2.0
    m.cost[lp.CU * t : (lp.CU + 1) * t] = 0.0
    cmax, dmax = max(battery.max_charge_kw, 1e-9), max(battery.max_discharge_kw, 1e-9)
    load = np.asarray(data.load_kw, dtype=np.float64)
    pv = np.asarray(data.pv_kw, dtype=np.float64)
    net = load - pv
    amb = np.flatnonzero(np.asarray(data.export_price) > np.asarray(data.import_price))
    rest = np.setdiff1d(np.arange(t), amb)
    one = np.ones(1)
    if len(rest):  # charge and discharge share the slot's time
        m.add_rows(
            [lp.C * t + rest, lp.D * t + rest],
            [one / cmax, one / dmax],
            np.full(len(rest), -lp._INF),
            np.ones(len(rest)),
        )
    n = len(amb)
    if n:
        lam = m.add_cols(n, 0.0, 0.0, 1.0, integer=False)  # share of the slot importing
        ci, di, cui = (m.add_cols(n, 0.0, 0.0, lp._INF, integer=False) for _ in range(3))
        ce, de, cue = (m.add_cols(n, 0.0, 0.0, lp._INF, integer=False) for _ in range(3))
        zero, ninf = np.zeros(n), np.full(n, -lp._INF)
        for tot, a, b in ((lp.C, ci, ce), (lp.D, di, de), (lp.CU, cui, cue)):
            m.add_rows([tot * t + amb, a, b], [one, -one, -one], zero, zero)
        # import regime: GI + GIX + DI - CI - CUI = lam * net
        m.add_rows(
            [lp.GI * t + amb, lp.GIX * t + amb, di, ci, cui, lam],
            [one, one, one, -one, -one, -net[amb]],
            zero,
            zero,
        )
        # export regime: -GE - GEX + DE - CE - CUE = (1 - lam) * net
        m.add_rows(
            [lp.GE * t + amb, lp.GEX * t + amb, de, ce, cue, lam],
            [-one, -one, one, -one, -one, net[amb]],
            net[amb],
            net[amb],
        )
        # each regime's battery time and curtailment within its share of the slot
        m.add_rows([ci, di, lam], [one / cmax, one / dmax, -one], ninf, zero)
        m.add_rows([ce, de, lam], [one / cmax, one / dmax, one], ninf, np.ones(n))
        m.add_rows([cui, lam], [one, -pv[amb]], ninf, zero)
        m.add_rows([cue, lam], [one, pv[amb]], ninf, pv[amb])
    status, x, obj = lp._solve(m, mip=False)
    if status != "Optimal":
        raise RuntimeError(f"perfect foresight LP: {status}")

    def v(k: int) -> FloatArray:
        return np.asarray(x[k * t : (k + 1) * t])

    ch, dis = v(lp.C), v(lp.D)
    imp = v(lp.GI) + v(lp.GIX)
    exp_ = v(lp.GE) + v(lp.GEX)
    cost = float(dt * (np.asarray(data.import_price) @ imp - np.asarray(data.export_price) @ exp_))
    deg = float(dt * (ch.sum() + dis.sum()) * battery.degradation_p_per_kwh / 2.0)
    return Foresight(
        battery_kw=dis - ch,
        soc_pct=v(lp.S) / battery.capacity_kwh * 100.0,
        grid_kw=imp - exp_,
        import_kwh=imp * dt,
        export_kwh=exp_ * dt,
        cost_p=cost,
        degradation_p=deg,
        objective_p=obj,
        solve_s=time.perf_counter() - t0,
        regime_slots=n,
    )
