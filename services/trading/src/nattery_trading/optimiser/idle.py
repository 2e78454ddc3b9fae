"""The one idle plan: the battery does nothing and the grid covers the site.

Used where no optimised plan applies: the solver's safe fallback and an emergency stop's hold. Its
``idle_self_consumption`` is None, so every slot is sent as HOLD (``instruction.py``)."""

from __future__ import annotations

import math

import numpy as np

from nattery_trading.optimiser.model import Plan, PlanInput


def idle_plan(inp: PlanInput, *, status: str, reason: str, method: str = "lp") -> Plan:
    t = inp.slots
    zero = np.zeros(t)
    net = np.asarray(inp.load_kw, dtype=np.float64) - np.asarray(inp.pv_kw, dtype=np.float64)
    return Plan(
        start=inp.start,
        slot_minutes=inp.slot_minutes,
        battery_power_kw=zero.copy(),
        charge_kw=zero.copy(),
        discharge_kw=zero.copy(),
        grid_kw=net,
        import_kw=np.maximum(net, 0),
        export_kw=np.maximum(-net, 0),
        curtailed_pv_kw=zero.copy(),
        soc_pct=np.full(t, inp.initial_soc_pct),
        objective_p=math.nan,
        status=status,
        solve_ms=0.0,
        used_mip=False,
        method=method,
        reasons=[reason] * t,
    )
