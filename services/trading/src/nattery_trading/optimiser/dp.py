"""Dynamic programme over a discretised state of charge, used to pick meter directions.

Where export pays more than import, the one-meter rule (never import and export in the same slot) makes
the slot's cost concave in the battery's power: the LP relaxation then "time-shares" within the slot and
binaries (a MIP) are slow on long runs of such slots (the optimal plan interleaves charge and export
slots, a highly symmetric MIP). A DP over SOC handles concave per-slot costs exactly up to its grid, in a
few milliseconds; the LP then re-solves with the DP's meter directions fixed, so everything else (demand
charge, limits, forced power, continuous SOC) stays exact within those directions.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nattery_trading.optimiser.model import FloatArray, PlanInput

LEVELS = 160


def _meter_cost(g_lo: FloatArray, g_hi: FloatArray, pi: FloatArray, pe: FloatArray) -> FloatArray:
    """Cheapest meter cost per hour for a net import anywhere in [g_lo, g_hi] (PV curtailment)."""

    def f(g: FloatArray) -> FloatArray:
        return np.where(g > 0, pi * g, pe * g)

    best = np.minimum(f(g_lo), f(g_hi))
    zero_inside = (g_lo <= 0) & (g_hi >= 0)
    return np.where(zero_inside, np.minimum(best, 0.0), best)


def dp_battery_power(
    inp: PlanInput, c_ub: FloatArray, d_ub: FloatArray, floor_kwh: float, ceil_kwh: float
) -> FloatArray:
    """Battery power per slot (> 0 discharge) of the DP-optimal plan on a SOC grid."""
    b = inp.battery
    t = inp.slots
    dt = inp.dt_h
    cap = b.capacity_kwh
    s0 = min(max(inp.initial_soc_pct / 100.0 * cap, floor_kwh), ceil_kwh)
    span = max(ceil_kwh - floor_kwh, 1e-6)
    delta = span / LEVELS
    levels = floor_kwh + delta * np.arange(LEVELS + 1)
    kc = int(np.floor(b.max_charge_kw * b.charge_efficiency * dt / delta + 1e-9))
    kd = int(np.floor(b.max_discharge_kw / b.discharge_efficiency * dt / delta + 1e-9))
    offsets = np.arange(-kd, kc + 1)  # SOC change in grid steps
    de = offsets * delta  # kWh, battery side
    power = np.where(de > 0, -de / (b.charge_efficiency * dt), -de * b.discharge_efficiency / dt)  # AC kW
    pi = np.asarray(inp.import_price_p_per_kwh, dtype=np.float64)[:, None]
    pe = np.asarray(inp.export_price_p_per_kwh, dtype=np.float64)[:, None]
    load = np.asarray(inp.load_kw, dtype=np.float64)[:, None]
    pv = np.asarray(inp.pv_kw, dtype=np.float64)[:, None]
    g_lo = load - pv - power[None, :]
    g_hi = g_lo + (pv if inp.site.allow_pv_curtailment else 0.0)
    cost = dt * (_meter_cost(g_lo, g_hi, pi, pe) + np.abs(power)[None, :] * b.degradation_p_per_kwh / 2.0)
    ok = (-power[None, :] <= c_ub[:, None] + 1e-9) & (power[None, :] <= d_ub[:, None] + 1e-9)
    cost = np.where(ok, cost, np.inf)  # (t, offsets)
    tv = inp.terminal_value_p_per_kwh or 0.0
    n = LEVELS + 1
    choice = np.empty((t, n), dtype=np.int64)
    # One padded value vector and one window view on it for the whole recursion (a new padded array and
    # a new view per slot were most of the DP's time): win[j, o] = v_next[j + offsets[o]], inf outside.
    padded = np.full(kd + n + kc, np.inf)
    v_next = padded[kd : kd + n]
    v_next[:] = -tv * levels
    win = sliding_window_view(padded, len(offsets))
    total = np.empty((n, len(offsets)))
    rows = np.arange(n)
    for i in range(t - 1, -1, -1):
        np.add(win, cost[i][None, :], out=total)
        np.argmin(total, axis=1, out=choice[i])
        v_next[:] = total[rows, choice[i]]
    j = round((s0 - floor_kwh) / delta)
    out = np.empty(t)
    for i in range(t):
        o = int(choice[i, j])
        out[i] = power[o]
        j += int(offsets[o])
    return out
