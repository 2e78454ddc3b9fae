"""Replay a year honestly: plan with only what was known at each moment, execute as the product does.

At each planning moment (every ``replan_every`` slots) the planner knows:
- actual load and PV strictly before now (its forecasts come from that history only);
- import AND export prices published by then: day-ahead prices for the next UK day appear at 16:00
  Europe/London (DST aware), so before 16:00 it knows prices to the end of today, after it to the end of
  tomorrow. Beyond the published prices the horizon is extended to ``min_horizon_h`` with a price
  forecast from past prices (mean of the same time of day over the last week), and energy left at the
  end is valued at a low quantile of the last week's import prices (what it would cost to buy it back).

Execution is the product's: each slot of the plan becomes the instruction the edge receives
(``optimiser.instruction.slot_instruction``, the function the schedule publisher uses), and
``backtest.inverter.DeyeModel`` does with it what the bridge's ``DeyeStrategy`` makes the inverter do
(tested against the bridge + simulator). The actual load and PV then decide the flows.

Perfect foresight is the exact optimum of the same flows over the whole period (``foresight.py``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from nattery_contracts.mqtt import BatteryMode
from nattery_trading.backtest.foresight import Foresight, solve_foresight
from nattery_trading.backtest.inputs import BacktestInput
from nattery_trading.backtest.inverter import DeyeModel
from nattery_trading.forecasting import Forecaster, SameSlotLastWeeks, SameTimeLastDays
from nattery_trading.optimiser import Battery, Plan, PlanInput, Site, solve
from nattery_trading.optimiser.instruction import SlotInstruction, slot_instruction
from nattery_trading.optimiser.model import FloatArray

LONDON = ZoneInfo("Europe/London")
PUBLISH_HOUR_LOCAL = 16
SAFE = SlotInstruction(BatteryMode.SELF_CONSUMPTION, 0.0, None)


@dataclass
class BacktestConfig:
    battery: Battery = field(default_factory=Battery)
    site: Site = field(default_factory=Site)
    initial_soc_pct: float = 50.0
    replan_every: int = 1
    min_horizon_h: float = 36.0
    max_horizon_h: float = 56.0
    terminal_quantile: float = 0.25
    load_forecaster: Forecaster = field(default_factory=SameSlotLastWeeks)
    pv_forecaster: Forecaster = field(default_factory=SameTimeLastDays)
    price_forecaster: Forecaster = field(default_factory=lambda: SameTimeLastDays(days=7))
    # the inverter model's integration step (s); the load and PV are one mean per slot
    step_s: float = 300.0
    # diagnostic only: plan on the ACTUAL future load and PV (prices stay honest), to measure how much of
    # the gap to perfect foresight is load/PV forecasting
    oracle_load_pv: bool = False


@dataclass
class RunResult:
    battery_kw: FloatArray
    soc_pct: FloatArray  # at the end of each slot
    grid_kw: FloatArray  # net over the slot
    cost_p: float
    degradation_p: float
    import_kwh: float
    export_kwh: float
    throughput_kwh: float


def published_until(times: list[datetime], slot_minutes: int) -> np.ndarray:
    """For each slot, the index one past the last slot whose price is published by its start."""
    n = len(times)
    t0 = times[0]
    step = timedelta(minutes=slot_minutes)
    out = np.empty(n, dtype=np.int64)
    cache: dict[tuple[Any, bool], int] = {}
    for k, t in enumerate(times):
        local = t.astimezone(LONDON)
        after = local.hour >= PUBLISH_HOUR_LOCAL
        key = (local.date(), after)
        if key not in cache:
            end_day = local.date() + timedelta(days=2 if after else 1)
            end_local = datetime(end_day.year, end_day.month, end_day.day, tzinfo=LONDON)
            cache[key] = math.ceil((end_local - t0) / step)
        out[k] = min(cache[key], n)
    return out


class Simulator:
    """The inverter (``DeyeModel``) and the meter, with the actual load and PV.

    Billing: the meter registers import and export separately (a slot where an SOC target ends a
    charge or discharge can hold both), import at the slot's import price, export at its export price."""

    def __init__(self, data: BacktestInput, cfg: BacktestConfig) -> None:
        self.d = data
        self.b = cfg.battery
        self.dt = data.slot_minutes / 60.0
        self.model = DeyeModel(cfg.battery, cfg.site, soc_pct=cfg.initial_soc_pct, step_s=cfg.step_s)
        n = len(data)
        self.battery_kw = np.zeros(n)
        self.soc_pct = np.zeros(n)
        self.grid_kw = np.zeros(n)
        self.imp = np.zeros(n)
        self.exp = np.zeros(n)
        self.cost = np.zeros(n)
        self.deg = np.zeros(n)

    @property
    def soc(self) -> float:
        return self.model.soc_pct

    def step(self, k: int, inst: SlotInstruction, new_schedule: bool) -> None:
        f = self.model.run_slot(
            inst,
            [float(self.d.load_kw[k]) * 1000.0],
            [float(self.d.pv_kw[k]) * 1000.0],
            self.dt * 3600.0,
            new_schedule,
        )
        self.battery_kw[k] = f.battery_kwh / self.dt
        self.soc_pct[k] = f.soc_pct
        self.grid_kw[k] = f.grid_kwh / self.dt
        self.imp[k], self.exp[k] = f.import_kwh, f.export_kwh
        self.cost[k] = self.d.import_price[k] * f.import_kwh - self.d.export_price[k] * f.export_kwh
        self.deg[k] = (f.charge_kwh + f.discharge_kwh) * self.b.degradation_p_per_kwh / 2.0

    def result(self) -> RunResult:
        return RunResult(
            self.battery_kw,
            self.soc_pct,
            self.grid_kw,
            float(self.cost.sum()),
            float(self.deg.sum()),
            float(self.imp.sum()),
            float(self.exp.sum()),
            float(np.abs(self.battery_kw).sum() * self.dt),
        )


def run_no_battery(data: BacktestInput) -> RunResult:
    dt = data.slot_minutes / 60.0
    grid = data.load_kw - data.pv_kw
    cost = dt * np.where(grid > 0, data.import_price * grid, data.export_price * grid)
    n = len(data)
    return RunResult(
        np.zeros(n),
        np.zeros(n),
        grid,
        float(cost.sum()),
        0.0,
        float(np.maximum(grid, 0).sum() * dt),
        float(np.maximum(-grid, 0).sum() * dt),
        0.0,
    )


def run_self_consumption(data: BacktestInput, cfg: BacktestConfig) -> RunResult:
    """The bridge's safe program all year: the inverter's own self-consumption."""
    sim = Simulator(data, cfg)
    for k in range(len(data)):
        sim.step(k, SAFE, k == 0)
    return sim.result()


@dataclass
class PlannerStats:
    plans: int = 0
    mode_slots: Counter[str] = field(default_factory=Counter)
    refused_schedules: int = 0
    mip_plans: int = 0
    solve_ms: list[float] = field(default_factory=list)
    horizons: list[int] = field(default_factory=list)


def _terminal_value(prices: FloatArray, q: float, battery: Battery) -> float:
    """What a kWh left in the battery is worth: buying it back at a cheap recent price, never below zero
    (it can always be kept; the product's planner, ``schedules/inputs.py``, uses the same rule)."""
    return max(0.0, float(np.quantile(prices, q))) / battery.charge_efficiency if len(prices) else 0.0


def _known_then_forecast(
    series: FloatArray, k: int, ke: int, h: int, data: BacktestInput, forecaster: Forecaster
) -> FloatArray:
    """Prices from slot ``k`` for ``h`` slots: published ones (before ``ke``), then a forecast from them."""
    out = np.empty(h)
    nk = min(ke - k, h)
    out[:nk] = series[k : k + nk]
    if h > nk:
        out[nk:] = forecaster.forecast(series[:ke], data.times[0], data.slot_minutes, h - nk)
    return out


def plan_at(data: BacktestInput, cfg: BacktestConfig, k: int, soc_pct: float, known_end: np.ndarray) -> Plan:
    """The plan made at slot ``k`` with what was known then."""
    per_day = 24 * 60 // data.slot_minutes
    min_h = round(cfg.min_horizon_h * 60 / data.slot_minutes)
    max_h = round(cfg.max_horizon_h * 60 / data.slot_minutes)
    ke = int(known_end[k])
    h = min(max(ke - k, min_h), max_h)
    price = _known_then_forecast(data.import_price, k, ke, h, data, cfg.price_forecaster)
    export = _known_then_forecast(data.export_price, k, ke, h, data, cfg.price_forecaster)
    load_f = cfg.load_forecaster.forecast(data.load_kw[:k], data.times[k], data.slot_minutes, h)
    pv_f = cfg.pv_forecaster.forecast(data.pv_kw[:k], data.times[k], data.slot_minutes, h)
    if cfg.oracle_load_pv:
        m = min(h, len(data) - k)
        load_f[:m], pv_f[:m] = data.load_kw[k : k + m], data.pv_kw[k : k + m]
    recent = data.import_price[max(0, ke - 7 * per_day) : ke]
    inp = PlanInput(
        start=data.times[k],
        slot_minutes=data.slot_minutes,
        import_price_p_per_kwh=price,
        export_price_p_per_kwh=export,
        load_kw=np.maximum(load_f, 0.0),
        pv_kw=np.maximum(pv_f, 0.0),
        initial_soc_pct=soc_pct,
        battery=cfg.battery,
        site=cfg.site,
        terminal_value_p_per_kwh=_terminal_value(recent, cfg.terminal_quantile, cfg.battery),
    )
    return solve(inp, explain=False)


def run_optimiser(
    data: BacktestInput,
    cfg: BacktestConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[RunResult, PlannerStats]:
    n = len(data)
    known_end = published_until(data.times, data.slot_minutes)
    sim = Simulator(data, cfg)
    stats = PlannerStats()
    active: tuple[Plan, int] | None = None  # the schedule the bridge runs, and the slot it starts at
    k = 0
    while k < n:
        plan = plan_at(data, cfg, k, sim.soc, known_end)
        stats.plans += 1
        stats.mip_plans += plan.method != "lp"
        stats.solve_ms.append(plan.solve_ms)
        stats.horizons.append(plan.slots)
        new = True
        if sim.model.refuses(slot_instruction(plan, 0)):
            # the bridge rejects the schedule (its current slot is outside the envelope at the SOC it
            # reads): the previous schedule keeps running
            stats.refused_schedules += 1
            new = False
        else:
            active = (plan, k)
        steps = min(cfg.replan_every, n - k)
        for j in range(steps):
            inst = SAFE
            if active is not None and k + j - active[1] < active[0].slots:
                inst = slot_instruction(active[0], k + j - active[1])
            stats.mode_slots[inst.mode.value] += 1
            sim.step(k + j, inst, new and j == 0)
        k += steps
        if progress is not None:
            progress(steps)
    return sim.result(), stats


def run_perfect_foresight(data: BacktestInput, cfg: BacktestConfig) -> tuple[RunResult, Foresight]:
    # the inverter charges PV up to its own maximum whatever soc_max says (no register holds soc_max):
    # perfect foresight gets the same room, so it stays a bound on every executed run
    room = replace(cfg.battery, soc_max_pct=max(cfg.battery.soc_max_pct, DeyeModel.inverter_max_soc_pct))
    f = solve_foresight(data, room, cfg.site, cfg.initial_soc_pct)
    dt = data.slot_minutes / 60.0
    r = RunResult(
        f.battery_kw,
        f.soc_pct,
        f.grid_kw,
        f.cost_p,
        f.degradation_p,
        float(f.import_kwh.sum()),
        float(f.export_kwh.sum()),
        float(np.abs(f.battery_kw).sum() * dt),
    )
    return r, f


def summarise(
    data: BacktestInput,
    cfg: BacktestConfig,
    none: RunResult,
    selfc: RunResult,
    opt: RunResult,
    pf: RunResult,
    foresight: Foresight,
    stats: PlannerStats,
    seconds: float,
) -> dict[str, Any]:
    def block(r: RunResult) -> dict[str, float | None]:
        total = r.cost_p + r.degradation_p
        return {
            "energy_cost_p": round(r.cost_p, 1),
            "degradation_cost_p": round(r.degradation_p, 1),
            "total_cost_p": round(total, 1),
            "savings_vs_no_battery_p": round(none.cost_p - total, 1),
            "import_kwh": round(r.import_kwh, 1),
            "export_kwh": round(r.export_kwh, 1),
            "battery_throughput_kwh": round(r.throughput_kwh, 1),
            "final_soc_pct": round(float(r.soc_pct[-1]), 1) if r.throughput_kwh else None,
        }

    opt_sav = none.cost_p - (opt.cost_p + opt.degradation_p)
    pf_sav = none.cost_p - (pf.cost_p + pf.degradation_p)
    sc_sav = none.cost_p - (selfc.cost_p + selfc.degradation_p)
    b = cfg.battery
    return {
        "period": {
            "start": data.times[0].isoformat(),
            "end": (data.times[-1] + timedelta(minutes=data.slot_minutes)).isoformat(),
            "slots": len(data),
            "slot_minutes": data.slot_minutes,
        },
        "data": "prices of the period; load and PV are the same every year (the average UK household "
        "profile and PVGIS Oxford 2016 PV, by day of year): a run on another year's prices tests the "
        "prices only, not a different year's weather or demand",
        "battery": {
            "capacity_kwh": b.capacity_kwh,
            "max_charge_kw": b.max_charge_kw,
            "max_discharge_kw": b.max_discharge_kw,
            "charge_efficiency": b.charge_efficiency,
            "discharge_efficiency": b.discharge_efficiency,
            "soc_min_pct": b.soc_min_pct,
            "soc_max_pct": b.soc_max_pct,
            "degradation_p_per_kwh": b.degradation_p_per_kwh,
            "initial_soc_pct": cfg.initial_soc_pct,
        },
        "cost_no_battery_p": round(none.cost_p, 1),
        "no_battery": block(none),
        "self_consumption": block(selfc),
        "optimiser": block(opt),
        "perfect_foresight": block(pf),
        "cost_self_consumption_p": round(selfc.cost_p + selfc.degradation_p, 1),
        "cost_optimiser_p": round(opt.cost_p + opt.degradation_p, 1),
        "cost_perfect_foresight_p": round(pf.cost_p + pf.degradation_p, 1),
        "capture_ratio": round(opt_sav / pf_sav, 4) if pf_sav > 0 else None,
        "self_consumption_capture_ratio": round(sc_sav / pf_sav, 4) if pf_sav > 0 else None,
        "savings_definition": "cost without battery - (energy cost + degradation cost); costs include "
        "degradation at degradation_p_per_kwh per kWh cycled (half on charge, half on discharge)",
        "execution": "each slot's instruction from optimiser.instruction.slot_instruction (what the "
        "schedule publisher sends), run by backtest.inverter.DeyeModel (the bridge's DeyeStrategy on the "
        f"simulator's inverter semantics, {cfg.step_s:g} s steps on each slot's mean load and PV)",
        "perfect_foresight_method": {
            "model": "one LP over the whole period (HiGHS): per-slot flows in the convex hull of the "
            "import and export regimes where export pays more than import, charge and discharge sharing "
            "the slot's time, PV curtailed only beyond a finite export limit",
            "regime_slots": foresight.regime_slots,
            "solve_s": round(foresight.solve_s, 2),
        },
        "planner": {
            "replan_every_slots": cfg.replan_every,
            "plans": stats.plans,
            "plans_with_export_above_import_fix": stats.mip_plans,
            "mode_slots": dict(stats.mode_slots),
            "schedules_refused_by_bridge": stats.refused_schedules,
            "median_solve_ms": round(float(np.median(stats.solve_ms)), 3) if stats.solve_ms else None,
            "p95_solve_ms": round(float(np.quantile(stats.solve_ms, 0.95)), 3) if stats.solve_ms else None,
            "median_horizon_slots": int(np.median(stats.horizons)) if stats.horizons else None,
            "min_horizon_h": cfg.min_horizon_h,
            "max_horizon_h": cfg.max_horizon_h,
            "price_publication": "import and export prices for the next UK day known from 16:00 "
            "Europe/London",
            "forecasts": {
                "load": repr(cfg.load_forecaster),
                "pv": repr(cfg.pv_forecaster),
                "price_beyond_published": repr(cfg.price_forecaster),
            },
            "oracle_load_pv": cfg.oracle_load_pv,
            "terminal_value": f"quantile {cfg.terminal_quantile} of the last 7 days' known import prices "
            "/ charge efficiency",
        },
        "runtime_s": round(seconds, 1),
    }


class ForesightAboveOptimiser(RuntimeError):
    """Perfect foresight cost more than the optimiser's run: the models disagree (a bug)."""


def run_all(
    data: BacktestInput, cfg: BacktestConfig, show_progress: bool = True
) -> tuple[dict[str, Any], RunResult]:
    from tqdm import tqdm

    t0 = time.perf_counter()
    none = run_no_battery(data)
    selfc = run_self_consumption(data, cfg)
    with tqdm(
        total=len(data), desc="optimiser", unit="slot", disable=not show_progress, mininterval=1.0
    ) as bar:
        opt, stats = run_optimiser(data, cfg, bar.update)
    pf, foresight = run_perfect_foresight(data, cfg)
    summary = summarise(data, cfg, none, selfc, opt, pf, foresight, stats, time.perf_counter() - t0)
    for name in ("cost_optimiser_p", "cost_self_consumption_p"):
        if summary["cost_perfect_foresight_p"] > summary[name] + 0.5:
            raise ForesightAboveOptimiser(
                f"perfect foresight costs {summary['cost_perfect_foresight_p']} p, more than "
                f"{name} {summary[name]} p: {summary}"
            )
    return summary, opt
