"""Where a plan starts: the battery's measured state (``site.state_measured``), never a silent guess.

- SOC: the newest measurement (device-service's ``site.state_measured``, or an actual posted through
  the API) when it is at most ``max_age_s`` old. Otherwise the plan still runs, and says why on the
  schedule (``forecast.initial_state``, and in ``forecast.summary``): a stale measurement is used with
  its age; without any, the middle of the battery's SOC window is assumed.
- Load and PV: while the measurement is fresh, the first slots of the forecast are pulled towards the
  measured means (persistence, fading with a one-hour time constant), as a short-term forecast should.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from nattery_trading.measured.repository import SiteStateRow
from nattery_trading.optimiser.model import FloatArray
from nattery_trading.sites.repository import SiteConfig

ANCHOR_TAU_MIN = 60.0  # persistence fades as exp(-t / tau)
ANCHOR_MIN_WEIGHT = 0.05


@dataclass(frozen=True)
class PlanStart:
    soc_pct: float
    info: dict[str, Any]
    load_kw: FloatArray
    pv_kw: FloatArray


def plan_start(
    site: SiteConfig,
    state: SiteStateRow | None,
    now: datetime,
    start: datetime,
    slot_minutes: int,
    load_kw: FloatArray,
    pv_kw: FloatArray,
    max_age_s: float,
) -> PlanStart:
    """The plan's initial SOC and anchored load/PV, and why (``info``: the schedule's
    ``forecast.initial_state``)."""
    # The newest SOC reading: a measured state, or the SOC of actuals posted through the API.
    readings: list[tuple[datetime, float, str]] = []
    if state is not None and state.soc_pct is not None:
        readings.append((state.measured_at, float(state.soc_pct), "site.state_measured"))
    if site.soc_pct is not None and site.soc_at is not None:
        readings.append((site.soc_at, float(site.soc_pct), "posted actuals"))
    info: dict[str, Any]
    if readings:
        at, soc, origin = max(readings, key=lambda r: r[0])
        age_s = max(0.0, (now - at).total_seconds())
        fresh = age_s <= max_age_s
        info = {
            "source": "measured" if fresh else "stale",
            "soc_pct": round(soc, 3),
            "measured_at": at.isoformat(),
            "age_s": round(age_s, 1),
            "from": origin,
            "reason": (
                f"SOC {soc:.1f}% measured {_ago(age_s)} ago"
                if fresh
                else f"SOC measurement stale: last {soc:.1f}% {_ago(age_s)} ago "
                f"(older than {_ago(max_age_s)}); planned from it"
            ),
        }
    else:
        soc = (float(site.soc_min_pct) + float(site.soc_max_pct)) / 2
        info = {
            "source": "assumed",
            "soc_pct": round(soc, 3),
            "measured_at": None,
            "age_s": None,
            "from": None,
            "reason": f"no SOC measured yet: assumed {soc:.1f}% (middle of the battery's SOC window)",
        }
    load, pv = load_kw, pv_kw
    fresh_state = state is not None and (now - state.measured_at).total_seconds() <= max_age_s
    if fresh_state and state is not None:
        load, info["load_anchor"] = _anchor(load_kw, state.load_kw, slot_minutes)
        pv, info["pv_anchor"] = _anchor(pv_kw, state.pv_kw, slot_minutes)
    return PlanStart(min(100.0, max(0.0, soc)), info, load, pv)


def _anchor(
    forecast: FloatArray, measured_kw: float | None, slot_minutes: int
) -> tuple[FloatArray, dict[str, Any] | None]:
    if measured_kw is None or len(forecast) == 0:
        return forecast, None
    t_min = np.arange(len(forecast)) * slot_minutes
    weight = np.exp(-t_min / ANCHOR_TAU_MIN)
    weight[weight < ANCHOR_MIN_WEIGHT] = 0.0
    out = np.asarray(weight * measured_kw + (1 - weight) * np.asarray(forecast), dtype=np.float64)
    return out, {"measured_kw": round(float(measured_kw), 4), "slots": int((weight > 0).sum())}


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
