"""A site's load and PV forecast for the service: provided forecasts first, the baselines beyond.

Per slot of the horizon, in order of preference:

1. ``provided``: a ``forecast.updated`` point (analytics) covering the slot;
2. ``baseline``: the pluggable baseline forecaster (the back-test's by default: load by same time of day
   and weekday, PV by the last days' production) run on the site's recorded actuals;
3. ``flat``: only when the site has no recorded history at all: load = the mean of the provided points
   if any, else a modest household base load; PV = 0.

``meta`` says which source each series used, for how many slots, and on how much history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from nattery_trading.forecasting.base import Forecaster
from nattery_trading.optimiser.model import FloatArray

FLAT_LOAD_KW = 0.4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Actuals:
    """Recorded actuals as arrays (what the repository reads for a forecast): each reading's slot start
    in microseconds since the epoch, and its load and PV (NaN where not recorded)."""

    t_us: npt.NDArray[np.int64]
    load_kw: FloatArray
    pv_kw: FloatArray

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> Actuals:
        """From rows with ``start_at`` and optional ``load_kw`` / ``pv_kw``."""

        def column(field: str) -> FloatArray:
            return np.array([r.get(field) for r in rows], dtype=np.float64)  # None -> NaN

        t_us = np.array([(r["start_at"] - _EPOCH) // _US for r in rows], dtype=np.int64)
        return cls(t_us, column("load_kw"), column("pv_kw"))


def history_from_actuals(
    rows: Sequence[dict[str, Any]] | Actuals, field: str, start: datetime, slot_minutes: int
) -> FloatArray | None:
    """Uniform slots from the first recorded slot up to (not including) ``start``, oldest first.

    Several readings in one slot are averaged; a slot without a reading takes the mean of the same time
    of day on the days that have one (else the overall mean), so the baselines see no holes. None when
    no reading of ``field`` exists."""
    # Integer microseconds since the epoch, vectorised: this runs for every site of a fleet re-plan on
    # weeks of half-hourly rows, where a per-row datetime loop cost ~6 ms a field (bench-trading).
    step_us = slot_minutes * 60_000_000
    start_us = (start - _EPOCH) // _US
    actuals = rows if isinstance(rows, Actuals) else Actuals.from_rows(rows)
    t_us = actuals.t_us
    values = actuals.load_kw if field == "load_kw" else actuals.pv_kw
    before = (t_us < start_us) & ~np.isnan(values)
    if not before.any():
        return None
    ago_us = start_us - t_us[before]  # > 0
    n = int(-(-int(ago_us.max()) // step_us))  # ceil
    index = n - 1 - (ago_us - 1) // step_us  # the slot [start - k step, start - (k - 1) step) holding it
    total = np.bincount(index, weights=values[before], minlength=n)
    count = np.bincount(index, minlength=n)
    hist = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    holes = np.isnan(hist)
    if holes.any():
        # Vectorised too: a loop over the phases with holes cost ~1.8 ms a field on a history that ends
        # a few hours before ``start`` (bench-trading); this is ~0.1 ms.
        per_day = max(1, 24 * 60 // slot_minutes)
        phase = (np.arange(n) - n) % per_day  # same time of day ⇔ same phase (slots end at ``start``)
        known = ~holes
        phase_total = np.bincount(phase[known], weights=hist[known], minlength=per_day)
        phase_count = np.bincount(phase[known], minlength=per_day)
        overall = float(hist[known].mean())
        fill = np.where(phase_count > 0, phase_total / np.maximum(phase_count, 1), overall)
        hist[holes] = fill[phase[holes]]
    return hist


class ProvidedPoint(Protocol):
    """A stored ``forecast.updated`` point (the repository's typed row)."""

    @property
    def start_at(self) -> datetime: ...
    @property
    def end_at(self) -> datetime: ...
    @property
    def load_kw(self) -> float | None: ...
    @property
    def pv_kw(self) -> float | None: ...
    @property
    def model(self) -> str: ...


def _point(
    r: ProvidedPoint | Mapping[str, Any],
) -> tuple[datetime, datetime, float | None, float | None, str]:
    if isinstance(r, Mapping):
        return r["start_at"], r["end_at"], r["load_kw"], r["pv_kw"], str(r.get("model") or "")
    return r.start_at, r.end_at, r.load_kw, r.pv_kw, r.model


def site_forecast(
    provided: Sequence[ProvidedPoint] | Sequence[Mapping[str, Any]],
    history: Sequence[dict[str, Any]] | Actuals,
    start: datetime,
    slot_minutes: int,
    slots: int,
    load_forecaster: Forecaster,
    pv_forecaster: Forecaster,
) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    step = timedelta(minutes=slot_minutes)
    given = {"load_kw": np.full(slots, np.nan), "pv_kw": np.full(slots, np.nan)}
    models: set[str] = set()
    for r in provided:  # spread each forecast point over the slots it overlaps
        p_start, p_end, p_load, p_pv, model = _point(r)
        i0 = max(0, math.floor((p_start - start) / step))
        i1 = min(slots, math.ceil((p_end - start) / step))
        if i1 <= i0:
            continue
        if p_load is not None:  # a PV-only forecast leaves load to the baseline
            given["load_kw"][i0:i1] = p_load
        if p_pv is not None:  # a load-only forecast leaves PV to the baseline
            given["pv_kw"][i0:i1] = p_pv
        if model:
            models.add(model)

    out: dict[str, FloatArray] = {}
    meta: dict[str, Any] = {}
    for field, name, forecaster in (("load_kw", "load", load_forecaster), ("pv_kw", "pv", pv_forecaster)):
        values = given[field]
        missing = np.isnan(values)
        hist = history_from_actuals(history, field, start, slot_minutes) if missing.any() else None
        info: dict[str, Any] = {
            "provided_slots": int((~missing).sum()),
            "baseline_slots": 0,
            "flat_slots": 0,
            "models": sorted(models) if (~missing).any() else [],
        }
        if missing.any():
            if hist is not None:
                base = np.maximum(np.asarray(forecaster.forecast(hist, start, slot_minutes, slots)), 0.0)
                values = np.where(missing, base, values)
                info["baseline_slots"] = int(missing.sum())
                info["baseline"] = repr(forecaster)
                info["history_days"] = round(len(hist) * slot_minutes / 1440.0, 2)
            else:
                if field == "load_kw":
                    flat = float(np.nanmean(values)) if (~missing).any() else FLAT_LOAD_KW
                else:
                    flat = 0.0
                values = np.where(missing, flat, values)
                info["flat_slots"] = int(missing.sum())
                info["flat_kw"] = flat
        info["source"] = "+".join(
            s
            for s, k in (
                ("provided", "provided_slots"),
                ("baseline", "baseline_slots"),
                ("flat", "flat_slots"),
            )
            if info[k]
        )
        out[name] = values
        meta[name] = info
    meta["summary"] = "; ".join(f"{k}: {_describe(meta[k])}" for k in ("load", "pv"))
    return out["load"], out["pv"], meta


def _describe(info: dict[str, Any]) -> str:
    parts = []
    if info["provided_slots"]:
        parts.append(
            f"forecast.updated ({', '.join(info['models']) or 'unnamed'}) for {info['provided_slots']} slots"
        )
    if info["baseline_slots"]:
        parts.append(
            f"baseline from {info['history_days']} days of actuals for {info['baseline_slots']} slots"
        )
    if info["flat_slots"]:
        parts.append(f"flat {info['flat_kw']:.2f} kW (no history) for {info['flat_slots']} slots")
    return ", ".join(parts)
