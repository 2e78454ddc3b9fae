"""The battery plan as a linear programme solved by HiGHS.

Per slot t (length dt hours) the columns are: charge C, discharge D, grid import GI, grid export GE,
curtailed PV CU, state of charge S (kWh, end of slot), and penalised slacks: import over the limit GIX,
export over the limit GEX, shortfall/excess against a forced power FP/FN, SOC below its floor SLO and
above its ceiling SHI. One more column PEAK carries the demand-charge peak.

Rows: power balance ``GI + GIX - GE - GEX + D - C - CU = load - pv``; energy
``S_t - S_(t-1) - eta_c dt C + dt/eta_d D = 0``; forced power ``D - C + FP - FN = F`` where forced;
``GI + GIX - PEAK <= 0`` in the demand-charge window; SOC floor/ceiling rows only when the start SOC is
outside its bounds (otherwise the bounds are hard and cannot conflict).

Never infeasible: every hard limit that can conflict has a slack with a penalty far above any price, so
the solver always answers and the plan lists what it relaxed and why.

One meter, one inverter: import and export (and charge and discharge) must not happen in the same slot.
The LP is a relaxation of that rule (it may "time-share" inside a slot). Where export is worth less than
import and cycling costs something, doing both never pays, so the LP optimum already satisfies it, and an
exclusive optimum of a relaxation is optimal for the exclusive problem: the common case stays one LP.
When export pays more than import (a negative Agile price against a fixed export tariff) the relaxation
does both; a MIP with binaries there is exact but slow (the optimum interleaves charge and export slots,
a very symmetric MIP: median ~57 ms, up to seconds on long cheap nights). Instead a DP over SOC picks
each such slot's meter direction and the LP is re-solved with them fixed: on sampled 2022 plans it
matched the MIP's objective (bench/trading.py), in a few ms. ``solve(exact=True)`` runs the MIP too.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np

from nattery_trading.optimiser.dp import dp_battery_power
from nattery_trading.optimiser.idle import idle_plan
from nattery_trading.optimiser.model import (
    FloatArray,
    Plan,
    PlanInput,
    Relaxation,
    RelaxationKind,
    WindowMode,
)
from nattery_trading.optimiser.reasons import Slacks, explain_plan, explain_relaxations

# Penalties (pence per kWh of violation); far above any price so they bind only when nothing else works.
# Order of what gives way first: a forced power (dispatch/manual window), then SOC floor/ceiling, then
# the grid connection's import/export limits.
PENALTY_FORCED = 500.0
PENALTY_SOC = 2_000.0
PENALTY_GRID_LIMIT = 10_000.0
# Tiny costs that break ties towards doing nothing (below any real price, above solver tolerance).
EPS_CYCLE = 1e-4
EPS_CURTAIL = 1e-3
TOL = 1e-6
MIP_TIME_LIMIT_S = 1.0
FIX_PASSES = 4  # re-solves fixing a slot by its net direction, before the exact model

C, D, GI, GE, CU, S, GIX, GEX, FP, FN, SLO, SHI = range(12)
NBLOCKS = 12
_INF = highspy.kHighsInf


@dataclass
class _Model:
    ncol: int
    cost: FloatArray
    lb: FloatArray
    ub: FloatArray
    rlb: list[FloatArray]
    rub: list[FloatArray]
    rows: list[np.ndarray]
    cols: list[np.ndarray]
    vals: list[FloatArray]
    nrow: int
    integrality: np.ndarray | None
    forced: FloatArray  # NaN where not forced
    floor_kwh: float
    ceil_kwh: float
    c_ub: FloatArray
    d_ub: FloatArray
    held: np.ndarray  # idle must hold here (manual hold/idle window, zero-power dispatch)
    soft_soc: bool = False  # SOC floor/ceiling rows (the start SOC is outside them)
    # the constraint matrix in the column-wise form HiGHS takes, once made (shared with the models
    # built on this one as their template: same rows, same matrix)
    csc: tuple[np.ndarray, np.ndarray, FloatArray] | None = None

    def add_rows(
        self, cols: list[np.ndarray], vals: list[FloatArray], lo: FloatArray, hi: FloatArray
    ) -> None:
        """Add ``len(lo)`` rows; cols[k]/vals[k] are the k-th term's column and coefficient per row."""
        n = len(lo)
        self.csc = None
        idx = np.arange(self.nrow, self.nrow + n)
        for c, v in zip(cols, vals, strict=True):
            self.rows.append(idx)
            self.cols.append(np.asarray(c, dtype=np.int64))
            self.vals.append(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)))
        self.rlb.append(np.asarray(lo, dtype=np.float64))
        self.rub.append(np.asarray(hi, dtype=np.float64))
        self.nrow += n

    def add_cols(self, n: int, cost: float, lb: float, ub: float, integer: bool) -> np.ndarray:
        self.csc = None
        idx = np.arange(self.ncol, self.ncol + n)
        self.cost = np.concatenate([self.cost, np.full(n, cost)])
        self.lb = np.concatenate([self.lb, np.full(n, lb)])
        self.ub = np.concatenate([self.ub, np.full(n, ub)])
        integ = self.integrality if self.integrality is not None else np.zeros(self.ncol, np.int32)
        self.integrality = np.concatenate([integ, np.full(n, 1 if integer else 0, np.int32)])
        self.ncol += n
        return idx


def _slot_masks(inp: PlanInput) -> tuple[FloatArray, FloatArray, FloatArray, np.ndarray]:
    """Per-slot charge/discharge upper bounds, forced battery power (NaN = free), and where the battery
    must hold when idle (a manual hold/idle window, a zero-power dispatch)."""
    t = inp.slots
    b, strat = inp.battery, inp.strategy
    c_ub = np.full(t, b.max_charge_kw)
    d_ub = np.full(t, b.max_discharge_kw)
    forced = np.full(t, np.nan)
    held = np.zeros(t, bool)
    if strat.kind == "self_consumption":
        net = inp.load_kw - inp.pv_kw
        c_ub = np.minimum(c_ub, np.maximum(-net, 0.0))
        d_ub = np.minimum(d_ub, np.maximum(net, 0.0))
    if strat.windows or strat.dispatches:
        starts = np.array([inp.slot_start(i).timestamp() for i in range(t)])
        ends = starts + inp.slot_minutes * 60
        for w in strat.windows:
            m = (starts < w.end.timestamp()) & (ends > w.start.timestamp())
            if w.mode == WindowMode.IDLE:
                c_ub[m] = 0.0
                d_ub[m] = 0.0
                held[m] = True
            elif w.mode == WindowMode.HOLD:
                d_ub[m] = 0.0
                held[m] = True
            elif w.mode == WindowMode.CHARGE:
                forced[m] = -abs(w.power_kw)
            else:
                forced[m] = abs(w.power_kw)
        for dsp in strat.dispatches:  # a dispatch overrides manual windows
            m = (starts < dsp.end.timestamp()) & (ends > dsp.start.timestamp())
            forced[m] = dsp.power_kw
    fm = ~np.isnan(forced)
    held[fm] = forced[fm] == 0.0
    # A forced slot may use the battery's full power in either direction (the row pins the net).
    c_ub[fm] = b.max_charge_kw
    d_ub[fm] = b.max_discharge_kw
    return c_ub, d_ub, forced, held


def build(inp: PlanInput, template: _Model | None = None) -> _Model:
    """The LP of ``inp``. ``template``: the model of an input of the same family (``_family``: same
    prices, battery, limits, strategy, start and horizon), whose costs, rows and matrix are taken as
    they are; only the bounds and right-hand sides that follow from load, PV and start SOC are made
    (not when the start SOC is outside its window: SOC rows of its own)."""
    t = inp.slots
    b, strat = inp.battery, inp.strategy
    cap = b.capacity_kwh
    load = np.asarray(inp.load_kw, dtype=np.float64)
    pv = np.asarray(inp.pv_kw, dtype=np.float64)
    s0 = min(max(inp.initial_soc_pct, 0.0), 100.0) / 100.0 * cap
    floor_kwh = max(b.soc_min_pct, strat.reserve_soc_pct) / 100.0 * cap
    ceil_kwh = b.soc_max_pct / 100.0 * cap
    floor_kwh = min(floor_kwh, ceil_kwh)
    soft_soc = not (floor_kwh - TOL <= s0 <= ceil_kwh + TOL)

    c_ub, d_ub, forced, held = _slot_masks(inp)
    fm = ~np.isnan(forced)

    ncol = NBLOCKS * t + 1
    lb = np.zeros(ncol)
    ub = np.zeros(ncol)
    if template is not None and (soft_soc or template.soft_soc or template.ncol != ncol):
        template = None
    cost = template.cost if template is not None else _costs(inp)
    _bounds(inp, lb, ub, c_ub, d_ub, fm, soft_soc, floor_kwh, ceil_kwh)
    rhs = load - pv
    e_rhs = np.zeros(t)
    e_rhs[0] = s0
    if template is not None:
        return _Model(
            ncol,
            cost,
            lb,
            ub,
            [rhs, e_rhs, *template.rlb[2:]],
            [rhs, e_rhs, *template.rub[2:]],
            list(template.rows),
            list(template.cols),
            list(template.vals),
            template.nrow,
            None,
            forced,
            floor_kwh,
            ceil_kwh,
            c_ub,
            d_ub,
            held,
            soft_soc,
            template.csc,
        )
    m = _Model(
        ncol,
        cost,
        lb,
        ub,
        [],
        [],
        [],
        [],
        [],
        0,
        None,
        forced,
        floor_kwh,
        ceil_kwh,
        c_ub,
        d_ub,
        held,
        soft_soc,
    )
    _rows(m, inp, rhs, e_rhs, fm, soft_soc, floor_kwh, ceil_kwh)
    return m


def _costs(inp: PlanInput) -> FloatArray:
    t = inp.slots
    b, strat = inp.battery, inp.strategy
    dt = inp.dt_h
    pi = np.asarray(inp.import_price_p_per_kwh, dtype=np.float64)
    pe = np.asarray(inp.export_price_p_per_kwh, dtype=np.float64)
    cost = np.zeros(NBLOCKS * t + 1)

    def blk(k: int) -> slice:
        return slice(k * t, (k + 1) * t)

    half_deg = dt * b.degradation_p_per_kwh / 2.0
    cost[blk(C)] = half_deg + EPS_CYCLE
    cost[blk(D)] = half_deg + EPS_CYCLE
    cost[blk(GI)] = dt * pi
    cost[blk(GE)] = -dt * pe
    cost[blk(CU)] = dt * EPS_CURTAIL
    cost[blk(GIX)] = dt * (pi + PENALTY_GRID_LIMIT)
    cost[blk(GEX)] = dt * (-pe + PENALTY_GRID_LIMIT)
    cost[blk(FP)] = dt * PENALTY_FORCED
    cost[blk(FN)] = dt * PENALTY_FORCED
    cost[blk(SLO)] = PENALTY_SOC
    cost[blk(SHI)] = PENALTY_SOC
    if inp.terminal_value_p_per_kwh is not None:
        cost[S * t + t - 1] = -inp.terminal_value_p_per_kwh
    dc = strat.demand_charge
    if dc is not None:
        cost[NBLOCKS * t] = dc.p_per_kw
    return cost


def _bounds(
    inp: PlanInput,
    lb: FloatArray,
    ub: FloatArray,
    c_ub: FloatArray,
    d_ub: FloatArray,
    fm: np.ndarray,
    soft_soc: bool,
    floor_kwh: float,
    ceil_kwh: float,
) -> None:
    """The columns' bounds, into ``lb`` and ``ub`` (zeros on entry)."""
    t = inp.slots
    site, strat = inp.site, inp.strategy
    cap = inp.battery.capacity_kwh
    load = np.asarray(inp.load_kw, dtype=np.float64)
    pv = np.asarray(inp.pv_kw, dtype=np.float64)

    def blk(k: int) -> slice:
        return slice(k * t, (k + 1) * t)

    ub[blk(C)] = c_ub
    ub[blk(D)] = d_ub
    # Physical maxima (import <= load + charge, export <= PV + discharge) keep the LP bounded even where
    # export pays more than import, and tighten the exclusivity big-Ms.
    max_imp = load + c_ub + 1e-3
    max_exp = pv + d_ub + 1e-3
    ub[blk(GI)] = np.minimum(max_imp, site.import_limit_kw)
    ub[blk(GE)] = np.minimum(max_exp, site.export_limit_kw)
    ub[blk(CU)] = pv if site.allow_pv_curtailment else 0.0
    if soft_soc:
        lb[blk(S)] = 0.0
        ub[blk(S)] = cap
        ub[blk(SLO)] = _INF
        ub[blk(SHI)] = _INF
    else:
        lb[blk(S)] = floor_kwh
        ub[blk(S)] = ceil_kwh
    # Grid limit slacks exist only where the limit is finite.
    ub[blk(GIX)] = np.maximum(max_imp - site.import_limit_kw, 0.0)
    ub[blk(GEX)] = np.maximum(max_exp - site.export_limit_kw, 0.0)
    ub[blk(FP)] = np.where(fm, _INF, 0.0)
    ub[blk(FN)] = np.where(fm, _INF, 0.0)
    peak_col = NBLOCKS * t
    dc = strat.demand_charge
    if dc is not None:
        lb[peak_col] = max(dc.billed_peak_kw, 0.0)
        ub[peak_col] = _INF


def _rows(
    m: _Model,
    inp: PlanInput,
    rhs: FloatArray,
    e_rhs: FloatArray,
    fm: np.ndarray,
    soft_soc: bool,
    floor_kwh: float,
    ceil_kwh: float,
) -> None:
    """The rows: power balance (right-hand side ``rhs``), energy (``e_rhs``), then those of the
    strategy."""
    t = inp.slots
    b, strat = inp.battery, inp.strategy
    dt = inp.dt_h
    forced = m.forced
    peak_col = NBLOCKS * t
    dc = strat.demand_charge
    ar = np.arange(t)

    def col(k: int, idx: np.ndarray = ar) -> np.ndarray:
        return k * t + idx

    # power balance
    m.add_rows(
        [col(GI), col(GIX), col(GE), col(GEX), col(D), col(C), col(CU)],
        [np.ones(1), np.ones(1), -np.ones(1), -np.ones(1), np.ones(1), -np.ones(1), -np.ones(1)],
        rhs,
        rhs,
    )
    # energy
    m.add_rows(
        [col(S), col(C), col(D)],
        [np.ones(1), np.full(1, -b.charge_efficiency * dt), np.full(1, dt / b.discharge_efficiency)],
        e_rhs,
        e_rhs,
    )
    if t > 1:  # -S_(t-1) terms, appended to the energy rows 1..t-1
        idx = np.arange(m.nrow - t + 1, m.nrow)
        m.rows.append(idx)
        m.cols.append(col(S, ar[:-1]))
        m.vals.append(-np.ones(t - 1))
    if fm.any():
        fi = ar[fm]
        m.add_rows(
            [col(D, fi), col(C, fi), col(FP, fi), col(FN, fi)],
            [np.ones(1), -np.ones(1), np.ones(1), -np.ones(1)],
            forced[fm],
            forced[fm],
        )
    if soft_soc:
        m.add_rows([col(S), col(SLO)], [np.ones(1), np.ones(1)], np.full(t, floor_kwh), np.full(t, _INF))
        m.add_rows([col(S), col(SHI)], [np.ones(1), -np.ones(1)], np.full(t, -_INF), np.full(t, ceil_kwh))
    if dc is not None:
        win = np.ones(t, bool) if dc.window is None else np.asarray(dc.window[:t], bool)
        if len(win) < t:
            win = np.concatenate([win, np.zeros(t - len(win), bool)])
        wi = ar[win]
        if len(wi):
            m.add_rows(
                [col(GI, wi), col(GIX, wi), np.full(len(wi), peak_col)],
                [np.ones(1), np.ones(1), -np.ones(1)],
                np.full(len(wi), -_INF),
                np.zeros(len(wi)),
            )


def _add_exclusivity(m: _Model, inp: PlanInput, grid_slots: np.ndarray, batt_slots: np.ndarray) -> None:
    t = inp.slots
    load = np.asarray(inp.load_kw, dtype=np.float64)
    pv = np.asarray(inp.pv_kw, dtype=np.float64)
    if len(grid_slots):
        z = m.add_cols(len(grid_slots), 0.0, 0.0, 1.0, integer=True)
        big_i = load[grid_slots] + m.c_ub[grid_slots] + 1e-3
        big_e = pv[grid_slots] + m.d_ub[grid_slots] + 1e-3
        m.add_rows(
            [GI * t + grid_slots, GIX * t + grid_slots, z],
            [np.ones(1), np.ones(1), -big_i],
            np.full(len(z), -_INF),
            np.zeros(len(z)),
        )
        m.add_rows(
            [GE * t + grid_slots, GEX * t + grid_slots, z],
            [np.ones(1), np.ones(1), big_e],
            np.full(len(z), -_INF),
            big_e,
        )
    if len(batt_slots):
        y = m.add_cols(len(batt_slots), 0.0, 0.0, 1.0, integer=True)
        m.add_rows(
            [C * t + batt_slots, y],
            [np.ones(1), -np.maximum(m.c_ub[batt_slots], 1e-3)],
            np.full(len(y), -_INF),
            np.zeros(len(y)),
        )
        dub = np.maximum(m.d_ub[batt_slots], 1e-3)
        m.add_rows([D * t + batt_slots, y], [np.ones(1), dub], np.full(len(y), -_INF), dub)


_PER_THREAD = threading.local()


def _highs(mip: bool) -> highspy.Highs:
    """A solver for one model. LPs reuse one instance per thread (cleared): creating one cost about
    as much as a tenth of a fleet re-plan's solve (bench-trading); a MIP gets a fresh one."""
    if not mip:
        h: highspy.Highs | None = getattr(_PER_THREAD, "lp", None)
        if h is not None:
            h.clearModel()
            return h
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    if mip:
        h.setOptionValue("mip_rel_gap", 1e-4)
        h.setOptionValue("time_limit", MIP_TIME_LIMIT_S)
    else:
        # These LPs are small (12 columns a slot) and mostly tight already: presolve cost more than it
        # saved (bench: about 30% of the LP's solve time at 72 slots, same optima).
        h.setOptionValue("presolve", "off")
        _PER_THREAD.lp = h
    return h


def _solve(m: _Model, mip: bool, basis: Any = None) -> tuple[str, FloatArray, float]:
    """Solve ``m``; an LP starts from ``basis`` (a ``highspy.HighsBasis`` of a model of the same
    structure and costs) when given, else from the slack basis."""
    if m.csc is None:
        rows = np.concatenate(m.rows)
        cols = np.concatenate(m.cols)
        vals = np.concatenate(m.vals)
        order = np.argsort(cols, kind="stable")
        counts = np.bincount(cols, minlength=m.ncol)
        a_start = np.zeros(m.ncol, np.int32)
        np.cumsum(counts[:-1], out=a_start[1:])
        m.csc = (a_start, rows[order].astype(np.int32), vals[order])
    a_start, a_index, a_value = m.csc
    integrality = (
        m.integrality if (mip and m.integrality is not None) else np.zeros(m.ncol, np.int32)
    )  # (an empty array is read as garbage by this highspy overload)
    h = _highs(mip)
    h.passModel(
        m.ncol,
        m.nrow,
        len(a_value),
        1,  # MatrixFormat.kColwise
        1,  # ObjSense.kMinimize
        0.0,
        m.cost,
        m.lb,
        m.ub,
        np.concatenate(m.rlb),
        np.concatenate(m.rub),
        a_start,
        a_index,
        a_value,
        integrality,
    )
    if basis is not None and not mip:
        h.setBasis(basis)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    if status != "Optimal" and not (mip and h.getInfo().primal_solution_status == 2):
        return status, np.zeros(m.ncol), math.nan
    if status != "Optimal":
        status = "Optimal"  # time limit with a feasible incumbent: usable
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    return status, x, float(h.getInfo().objective_function_value)


# --- warm start from a reference plan's basis ----------------------------------------------------------
# A fleet re-plan solves thousands of LPs that differ only in load, PV and start SOC (the right-hand
# sides and bounds): their prices, battery, limits and strategy, hence their columns, rows, matrix and
# costs, are the same. The optimal basis of one *reference* LP of that family (the same input with a
# flat 0.5 kW load, no PV and the start SOC in the middle of its window: made from the family's key
# alone, so a plan depends on its own input only, never on which plans a process solved before) is dual
# feasible for every member (same costs), and the dual simplex starts there: ~40 iterations instead of
# ~200 on the bench's 72-slot plans, the same optimum (bench-trading: |x| differences below 1e-13).
REFERENCE_LOAD_KW = 0.5
REFERENCES_KEPT = 32


def _highs_lp() -> highspy.Highs:
    """This thread's LP instance as it is (``_highs`` clears it)."""
    h: highspy.Highs = _PER_THREAD.lp
    return h


def _copy_basis(basis: Any) -> Any:
    out = highspy.HighsBasis()
    out.valid, out.alien, out.was_alien = basis.valid, basis.alien, basis.was_alien
    out.col_status, out.row_status = list(basis.col_status), list(basis.row_status)
    return out


def _family(inp: PlanInput) -> Hashable:
    """What a plan's columns, rows, matrix and costs follow from (everything but load, PV, start SOC)."""
    return (
        inp.start,
        inp.slot_minutes,
        inp.slots,
        inp.battery,
        inp.site,
        inp.strategy,
        inp.terminal_value_p_per_kwh,
        np.asarray(inp.import_price_p_per_kwh, dtype=np.float64).tobytes(),
        np.asarray(inp.export_price_p_per_kwh, dtype=np.float64).tobytes(),
    )


@dataclass(frozen=True)
class _Reference:
    """A family's reference LP (its model, the template of the family's models) and its optimal basis."""

    model: _Model
    basis: Any


def _reference(inp: PlanInput) -> _Reference | None:
    """The reference LP of ``inp``'s family, solved (cached per thread); None when it is not optimal."""
    refs: OrderedDict[Hashable, _Reference | None] | None = getattr(_PER_THREAD, "references", None)
    if refs is None:
        refs = _PER_THREAD.references = OrderedDict()
    key = _family(inp)
    if key in refs:
        refs.move_to_end(key)
        return refs[key]
    b = inp.battery
    ceil_pct = b.soc_max_pct
    floor_pct = min(max(b.soc_min_pct, inp.strategy.reserve_soc_pct), ceil_pct)
    rm = build(
        dataclasses.replace(
            inp,
            load_kw=np.full(inp.slots, REFERENCE_LOAD_KW),
            pv_kw=np.zeros(inp.slots),
            initial_soc_pct=(floor_pct + ceil_pct) / 2.0,
        )
    )
    ref = None
    if not rm.soft_soc:
        status, _, _ = _solve(rm, mip=False)
        if status == "Optimal":
            # (a copy: the instance's own basis is cleared with its next model)
            ref = _Reference(rm, _copy_basis(_highs_lp().getBasis()))
    refs[key] = ref
    while len(refs) > REFERENCES_KEPT:
        refs.popitem(last=False)
    return ref


def _violations(x: FloatArray, t: int) -> tuple[np.ndarray, np.ndarray, FloatArray, FloatArray]:
    imp = x[GI * t : (GI + 1) * t] + x[GIX * t : (GIX + 1) * t]
    exp_ = x[GE * t : (GE + 1) * t] + x[GEX * t : (GEX + 1) * t]
    ch = x[C * t : (C + 1) * t]
    dis = x[D * t : (D + 1) * t]
    bad_grid = np.minimum(imp, exp_) > 1e-5
    bad_batt = np.minimum(ch, dis) > 1e-5
    return bad_grid, bad_batt, imp - exp_, dis - ch


def _fix_modes(m: _Model, t: int, slots: np.ndarray, modes: FloatArray) -> None:
    """+1: the slot may only import; -1: only export."""
    imp = slots[modes > 0]
    exp_ = slots[modes < 0]
    m.ub[GE * t + imp] = 0.0
    m.ub[GEX * t + imp] = 0.0
    m.ub[GI * t + exp_] = 0.0
    m.ub[GIX * t + exp_] = 0.0


def solve(inp: PlanInput, *, explain: bool = True, exact: bool = False, warm_start: bool = False) -> Plan:
    """Plan the battery over ``inp``'s horizon. Never raises for conflicting limits.

    One meter/one inverter exclusivity (see the module docstring): the LP relaxation is solved first; if
    its optimum never imports and exports (or charges and discharges) in the same slot, it is optimal.
    Otherwise every slot where export pays more than import gets the meter direction of a dynamic
    programme over SOC (``dp.py``, exact for the concave per-slot cost up to its SOC grid), and the LP is
    re-solved with those directions fixed. The distance from the relaxation's bound is reported in
    ``Plan.bound_gap_p``. ``exact=True`` also solves the MIP (binaries on those slots) and keeps
    whichever is better (bench/trading.py compares the two).

    ``warm_start``: the relaxation's dual simplex starts from the optimal basis of a reference LP of the
    same prices, battery, limits and strategy (see ``_reference_basis``): for callers that solve many
    plans of one family (a fleet re-plan), one extra solve per family and far fewer iterations per plan.
    """
    t0 = time.perf_counter()
    t = inp.slots
    ref = _reference(inp) if warm_start else None
    # a member of the reference's family: its costs, rows and matrix, the site's bounds
    m = build(inp) if ref is None else build(inp, ref.model)
    same_shape = ref is not None and not m.soft_soc and (m.nrow, m.ncol) == (ref.model.nrow, ref.model.ncol)
    basis = ref.basis if ref is not None and same_shape else None
    status, x, obj = _solve(m, mip=False) if basis is None else _solve(m, mip=False, basis=basis)
    bound = obj
    method = "lp"
    pi = np.asarray(inp.import_price_p_per_kwh, dtype=np.float64)
    pe = np.asarray(inp.export_price_p_per_kwh, dtype=np.float64)
    fixed_batt = np.zeros(t, bool)
    amb = np.zeros(0, np.int64)
    if status == "Optimal":
        bad_grid, bad_batt, _, _ = _violations(x, t)
        if bad_grid.any():
            method = "lp-fixed-direction"
            amb = np.flatnonzero((pe > pi) | bad_grid)
            batt = dp_battery_power(inp, m.c_ub, m.d_ub, m.floor_kwh, m.ceil_kwh)
            g = np.asarray(inp.load_kw) - np.asarray(inp.pv_kw) - batt
            _fix_modes(m, t, amb, np.where(g[amb] >= 0, 1.0, -1.0))
            status, x, obj = _solve(m, mip=False)
        for _ in range(FIX_PASSES):  # charge and discharge together (negative prices): net direction
            if status != "Optimal":
                break
            bad_grid, bad_batt, net_grid, net_batt = _violations(x, t)
            if not bad_grid.any() and not bad_batt.any():
                break
            if method == "lp":
                method = "lp-fixed-direction"
            for i in np.flatnonzero(bad_grid):
                if net_grid[i] >= 0:
                    m.ub[GE * t + i] = m.ub[GEX * t + i] = 0.0
                else:
                    m.ub[GI * t + i] = m.ub[GIX * t + i] = 0.0
            for i in np.flatnonzero(bad_batt):
                fixed_batt[i] = True
                if net_batt[i] >= 0:
                    m.ub[C * t + i] = 0.0
                else:
                    m.ub[D * t + i] = 0.0
            status, x, obj = _solve(m, mip=False)
    if status == "Optimal" and exact and method != "lp":
        mm = build(inp)
        _add_exclusivity(mm, inp, np.flatnonzero(pe >= pi), np.flatnonzero(fixed_batt))
        st2, x2, obj2 = _solve(mm, mip=True)
        if st2 == "Optimal" and obj2 <= obj + 1e-6:
            x, obj, m, method = x2, obj2, mm, "mip"
    split = np.zeros(0, np.int64)
    if status == "Optimal":
        bad_grid, bad_batt, _, _ = _violations(x, t)
        if (bad_grid.any() or bad_batt.any()) and method != "mip":
            # a split survived the fix-up passes: solve the exact model (binaries on those slots)
            mm = build(inp)
            _add_exclusivity(
                mm, inp, np.flatnonzero((pe >= pi) | bad_grid), np.flatnonzero(fixed_batt | bad_batt)
            )
            st2, x2, obj2 = _solve(mm, mip=True)
            if st2 == "Optimal":
                x, obj, m, method = x2, obj2, mm, "mip"
                bad_grid, bad_batt, _, _ = _violations(x, t)
        # never netted silently: a split the exact model could not remove is marked on the plan
        split = np.flatnonzero(bad_grid | bad_batt)
    if status != "Optimal":
        plan = _fallback(inp, status)
        plan.solve_ms = (time.perf_counter() - t0) * 1000
        return plan
    plan = _to_plan(inp, m, x, obj, status, method == "mip")
    plan.method = method
    plan.split_slots = tuple(int(i) for i in split)
    plan.idle_self_consumption = ~m.held
    plan.bound_gap_p = max(obj - bound, 0.0)
    if explain:
        slacks = Slacks(
            soc_below_min_kwh=x[SLO * t : (SLO + 1) * t],
            soc_above_max_kwh=x[SHI * t : (SHI + 1) * t],
            import_over_limit_kw=x[GIX * t : (GIX + 1) * t],
            export_over_limit_kw=x[GEX * t : (GEX + 1) * t],
            forced_over_kw=x[FP * t : (FP + 1) * t],
            forced_under_kw=x[FN * t : (FN + 1) * t],
        )
        plan.relaxations = explain_relaxations(inp, plan, m.floor_kwh, m.ceil_kwh, m.forced, slacks)
        plan.reasons = explain_plan(inp, plan)
        for j in plan.split_slots:
            plan.reasons[j] += "; SPLIT: imports and exports (or charges and discharges) in one slot"
    plan.solve_ms = (time.perf_counter() - t0) * 1000
    return plan


def _to_plan(inp: PlanInput, m: _Model, x: FloatArray, obj: float, status: str, used_mip: bool) -> Plan:
    t = inp.slots

    def v(k: int) -> FloatArray:
        return np.asarray(x[k * t : (k + 1) * t])

    ch, dis = v(C), v(D)
    # the LP's own columns, not netted: ``solve`` has made them exclusive or marked the plan
    imp = v(GI) + v(GIX)
    exp_ = v(GE) + v(GEX)
    net = imp - exp_
    soc = v(S) / inp.battery.capacity_kwh * 100.0
    peak = float(x[NBLOCKS * t]) if inp.strategy.demand_charge is not None else None
    return Plan(
        start=inp.start,
        slot_minutes=inp.slot_minutes,
        battery_power_kw=dis - ch,
        charge_kw=ch,
        discharge_kw=dis,
        grid_kw=net,
        import_kw=imp,
        export_kw=exp_,
        curtailed_pv_kw=v(CU),
        soc_pct=soc,
        objective_p=obj,
        status=status,
        solve_ms=0.0,
        used_mip=used_mip,
        peak_import_kw=peak,
    )


def _fallback(inp: PlanInput, status: str) -> Plan:
    """A safe plan when the solver fails: battery idle, grid covers the site."""
    return idle_plan(
        inp,
        status=f"fallback ({status})",
        reason=f"idle: solver answered {status}; holding as a safe fallback",
    )


__all__ = ["Relaxation", "RelaxationKind", "build", "solve"]
