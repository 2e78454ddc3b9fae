"""The day-ahead load model: gradient boosting with quantile loss, trained on the site's own history,
blended with a seasonal-naive median, and the persistence forecast it falls back to.

- ``LoadModel.fit`` builds one training row per half-hour of every past day that has its day-ahead
  features (``features.day_ahead_rows``) and a reading, and fits one LightGBM regressor with quantile
  loss per quantile (LightGBM rather than scikit-learn's HistGradientBoosting: the same model family,
  about ten times faster to fit with quantile loss here, and lighter to install).
- ``LoadModel.predict``: the point forecast is ``(1 - naive_weight)`` x the trees' median plus
  ``naive_weight`` x ``seasonal_naive`` (the same time's median over the last days, scaled by how busy
  the last 24 h were against the last week: ``features.recent_level_ratio``). Both target the
  median, which minimises the absolute error the benchmark scores; the trees' median alone is noisy on
  spiky household load and the plain medians err differently, so their blend beats either. The outer
  quantiles are shifted with the median and give the spread.
- The fallbacks, while the site has fewer than ``min_history_days`` of readings: from
  ``min_naive_days`` (2) days on, the seasonal naive alone (the same time's median over the known days,
  up to 7, averaged with the ±30 min median over up to 14; bench/analytics.py's first two weeks, measured
  offline: +0.009 on EMHASS, +0.014 on Sceaux against persistence); before that, ``persistence``: the
  same time yesterday where it was known at the issue time, else the same time the day before, else
  the mean of the same time on the known days (also the benchmark's reference).
- ``forecast_day`` decides which runs and says why (``Forecast.reason``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import lightgbm
import numpy as np
import numpy.typing as npt

from nattery_analytics.forecasts.features import (
    FEATURES,
    SLOTS_PER_DAY,
    FloatArray,
    IntArray,
    LoadHistory,
    day_ahead_rows,
    day_slots,
    issue_instant,
    recent_level_ratio,
)

MODEL_NAME = "analytics.load.gbm_quantile.v2"  # v2: blended with the seasonal-naive median
PERSISTENCE_NAME = "analytics.load.persistence_fallback"
SEASONAL_NAIVE_NAME = "analytics.load.seasonal_naive_fallback"
FALLBACK_NAMES: frozenset[str] = frozenset({PERSISTENCE_NAME, SEASONAL_NAIVE_NAME})
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
MEDIAN = 0.5


@dataclass(frozen=True)
class ModelConfig:
    issue_local: time = time(16, 0)
    quantiles: tuple[float, ...] = QUANTILES
    min_history_days: float = 14.0  # fewer days with readings than this: a fallback, no model
    # From this many days with readings (and below min_history_days): the seasonal naive instead of
    # persistence. With one day the 7-day "median" is yesterday's value itself, i.e. persistence with a
    # ±30 min smoothing; from two days on it averages days, which is what beats persistence.
    min_naive_days: float = 2.0
    max_training_days: int = 365  # older days are not used for training
    # Small, regularised trees: half-hourly household load is mostly noise around a profile. Alone, 8 leaves
    # of at least 200 rows beat 31 leaves of 40; blended with the seasonal naive (below), 16 leaves of 100
    # did better (bench/analytics.py: EMHASS 0.131 -> 0.133, Sceaux 0.232 -> 0.235; 31 leaves or 500
    # trees within 0.001 of it, slower).
    n_estimators: int = 300
    learning_rate: float = 0.03
    num_leaves: int = 16
    min_child_samples: int = 100
    seed: int = 0
    # Training days weigh 0.5 ** (age / half-life) when set. Off: on the EMHASS house a 120-day
    # half-life moved the skill by +0.001 only, and shorter training windows (60, 120 days) lost 0.01.
    recency_half_life_days: float | None = None
    # Share of the seasonal-naive median (``seasonal_naive``) in the point forecast, the rest being the
    # model's median; the outer quantiles move with it. The trees' median is noisy on spiky household load
    # and errs differently from the plain medians: a 50/50 blend beat either alone on both houses
    # (bench/analytics.py: EMHASS 0.120 -> 0.124, Sceaux 0.225 -> 0.228; 0.4 to 0.6 within 0.002).
    naive_weight: float = 0.5
    # The seasonal naive is scaled by (mean of the last 24 h / mean of the last 7 days) ** this, both
    # before the issue time: a busier or emptier house than its week (bench/analytics.py: 0.5 raised
    # EMHASS 0.124 -> 0.131, Sceaux 0.228 -> 0.232; 1.0 less, and scaling the trees' median too lost).
    naive_level_exponent: float = 0.5

    def __post_init__(self) -> None:
        if MEDIAN not in self.quantiles:
            raise ValueError("the quantiles must include the median (0.5), the point forecast")
        if self.min_naive_days < 1.0:
            raise ValueError("min_naive_days must be at least 1 (the seasonal naive needs a past day)")
        if not 0.0 <= self.naive_weight <= 1.0:
            raise ValueError("naive_weight must be within [0, 1]")


@dataclass(frozen=True)
class Forecast:
    """One local day of half-hourly load (kW), each slot ``[start, start + 30 min)``."""

    target_day: date
    issued_at: datetime
    starts: list[datetime]
    load_kw: FloatArray  # the point forecast (the median for the model)
    quantiles_kw: dict[float, FloatArray]  # empty for persistence
    model: str
    reason: str  # why this model: trained on how much, or why the fallback


@dataclass
class DayRows:
    """``day_ahead_rows`` of one history, computed once per target day."""

    history: LoadHistory
    zone: ZoneInfo
    issue_local: time
    holidays: frozenset[date] = frozenset()
    _cache: dict[date, tuple[IntArray, FloatArray]] = field(default_factory=dict)

    def get(self, day: date) -> tuple[IntArray, FloatArray]:
        if day not in self._cache:
            self._cache[day] = day_ahead_rows(self.history, day, self.zone, self.issue_local, self.holidays)
        return self._cache[day]


@dataclass
class LoadModel:
    """Quantile models trained on one site's history up to ``trained_until``."""

    config: ModelConfig
    zone: ZoneInfo
    holidays: frozenset[date] = frozenset()
    trained_until: datetime | None = None
    training_days: int = 0
    _models: dict[float, lightgbm.Booster] = field(default_factory=dict)
    _columns: npt.NDArray[np.bool_] | None = None  # features with a value in training (no temperature: off)

    @property
    def trained(self) -> bool:
        return bool(self._models)

    def fit(self, history: LoadHistory, until: datetime, rows: DayRows | None = None) -> bool:
        """Train on the slots that ended before ``until``; False (and untrained) when fewer than
        ``min_history_days`` of readings exist before then. ``rows`` shares the feature rows of
        ``history`` between fits (a walk-forward re-trains on the same history many times)."""
        rows = rows or DayRows(history, self.zone, self.config.issue_local, self.holidays)
        cut = min(history.index_of(until), len(history.load_kw))
        known_days = float(np.count_nonzero(~np.isnan(history.load_kw[:cut]))) / SLOTS_PER_DAY
        self._models = {}
        self.trained_until = until
        self.training_days = 0
        if known_days < self.config.min_history_days:
            return False
        first_local = history.start.astimezone(self.zone).date() + timedelta(days=1)
        last_local = until.astimezone(self.zone).date() - timedelta(days=1)
        first_local = max(first_local, last_local - timedelta(days=self.config.max_training_days))
        xs: list[FloatArray] = []
        ys: list[FloatArray] = []
        ws: list[FloatArray] = []
        day = first_local
        while day <= last_local:
            idx, x = rows.get(day)
            inside = (idx >= 0) & (idx < cut)
            y = np.full(len(idx), np.nan)
            y[inside] = history.load_kw[idx[inside]]
            keep = ~np.isnan(y)
            if keep.any():
                xs.append(x[keep])
                ys.append(y[keep])
                age_days = (last_local - day).days
                half_life = self.config.recency_half_life_days
                ws.append(
                    np.full(int(keep.sum()), 1.0 if half_life is None else 0.5 ** (age_days / half_life))
                )
                self.training_days += 1
            day += timedelta(days=1)
        if not xs:
            return False
        x_train, y_train, weight = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
        self._columns = np.asarray(~np.isnan(x_train).all(axis=0), dtype=np.bool_)
        x_train = x_train[:, self._columns]
        for q in self.config.quantiles:
            params = {
                "objective": "quantile",
                "alpha": q,
                "learning_rate": self.config.learning_rate,
                "num_leaves": self.config.num_leaves,
                # A young site (a few weeks of rows) still gets trees that can split.
                "min_data_in_leaf": min(self.config.min_child_samples, max(10, len(y_train) // 8)),
                "seed": self.config.seed,
                "num_threads": 1,  # one site per fit: sites run side by side, not threads per fit
                "verbose": -1,
            }
            self._models[q] = lightgbm.train(
                params,
                lightgbm.Dataset(x_train, y_train, weight=weight),
                num_boost_round=self.config.n_estimators,
            )
        return True

    def predict(self, history: LoadHistory, target_day: date) -> dict[float, FloatArray]:
        if not self._models or self._columns is None:
            raise RuntimeError("model not trained")
        _, x = day_ahead_rows(history, target_day, self.zone, self.config.issue_local, self.holidays)
        ratio = recent_level_ratio(history, target_day, self.zone, self.config.issue_local)
        naive = seasonal_naive(x) * ratio**self.config.naive_level_exponent
        x = x[:, self._columns]
        qs = sorted(self._models)
        # Quantiles fitted separately can cross; sorted per slot they stay a valid spread.
        ordered = np.sort(np.stack([np.maximum(self._models[q].predict(x), 0.0) for q in qs]), axis=0)
        median = ordered[qs.index(MEDIAN)]
        w = self.config.naive_weight
        point = np.where(np.isnan(naive), median, (1.0 - w) * median + w * naive)
        # The spread moves with the point forecast (both are >= 0: the order and the sign hold).
        shifted = np.maximum(ordered + (point - median), 0.0)
        return {q: shifted[i] for i, q in enumerate(qs)}


def seasonal_naive(x: FloatArray) -> FloatArray:
    """The seasonal-naive forecast of ``day_ahead_rows`` rows: the mean of the same time's median over the
    last 7 days and the median of the same time ±30 min over 14 days (NaN where neither is known)."""
    pair = x[:, [FEATURES.index("same_time_median_7d_kw"), FEATURES.index("same_time_wide_median_14d_kw")]]
    with warnings.catch_warnings():  # both unknown (a gap): NaN, the model's median stays
        warnings.simplefilter("ignore", RuntimeWarning)
        out: FloatArray = np.nanmean(pair, axis=1)
    return out


def persistence(history: LoadHistory, target_day: date, zone: ZoneInfo, issue_local: time) -> FloatArray:
    """Same time yesterday where known at the issue time, else the day before, else the mean of the same
    time on the known days; 0 for a site with no reading at all."""
    issue = issue_instant(target_day - timedelta(days=1), zone, issue_local)
    known_before = min(history.index_of(issue), len(history.load_kw))
    first, n = day_slots(target_day, zone)
    idx = history.index_of(first) + np.arange(n)
    load = history.load_kw[: max(known_before, 0)]
    out = np.full(n, np.nan)
    for back in (SLOTS_PER_DAY, 2 * SLOTS_PER_DAY):
        src = idx - back
        ok = np.isnan(out) & (src >= 0) & (src < len(load))
        out[ok] = load[src[ok]]
    if np.isnan(out).any():
        known = ~np.isnan(load)
        if known.any():
            positions = np.arange(len(load)) % SLOTS_PER_DAY
            for i in np.flatnonzero(np.isnan(out)):
                same_time = known & (positions == idx[i] % SLOTS_PER_DAY)
                out[i] = float(load[same_time].mean()) if same_time.any() else float(load[known].mean())
        else:
            out[:] = 0.0
    clipped: FloatArray = np.maximum(out, 0.0)
    return clipped


def forecast_day(
    model: LoadModel | None,
    history: LoadHistory,
    target_day: date,
    zone: ZoneInfo,
    config: ModelConfig,
    *,
    issued_at: datetime | None = None,
) -> Forecast:
    """The model's forecast when ``model`` is trained, else a fallback with the reason: the seasonal
    naive from ``min_naive_days`` of history (persistence where a slot has no same-time reading yet),
    persistence before that."""
    first, n = day_slots(target_day, zone)
    starts = [first + timedelta(minutes=30) * i for i in range(n)]
    issued = issued_at or datetime.now(UTC)
    if model is not None and model.trained:
        quantiles = model.predict(history, target_day)
        return Forecast(
            target_day=target_day,
            issued_at=issued,
            starts=starts,
            load_kw=quantiles[MEDIAN],
            quantiles_kw=quantiles,
            model=MODEL_NAME,
            reason=f"trained on {model.training_days} days up to {model.trained_until:%Y-%m-%d %H:%M}Z",
        )
    issue = issue_instant(target_day - timedelta(days=1), zone, config.issue_local)
    cut = min(history.index_of(issue), len(history.load_kw))
    known_days = float(np.count_nonzero(~np.isnan(history.load_kw[: max(cut, 0)]))) / SLOTS_PER_DAY
    why = f"fallback: {known_days:.1f} days of load history, the model needs {config.min_history_days:g}"
    fallback = persistence(history, target_day, zone, config.issue_local)
    if known_days < config.min_naive_days:
        load, name = fallback, PERSISTENCE_NAME
        why += f"; persistence below {config.min_naive_days:g} days"
    else:
        _, x = day_ahead_rows(history, target_day, zone, config.issue_local)
        naive = seasonal_naive(x)
        load, name = np.where(np.isnan(naive), fallback, np.maximum(naive, 0.0)), SEASONAL_NAIVE_NAME
        why += "; seasonal-naive median of the same time over the known days"
    return Forecast(
        target_day=target_day,
        issued_at=issued,
        starts=starts,
        load_kw=load,
        quantiles_kw={},
        model=name,
        reason=why,
    )


def recent_days_mean(
    values: FloatArray,
    history: LoadHistory,
    target_day: date,
    zone: ZoneInfo,
    issue_local: time,
    days: int = 3,
) -> FloatArray:
    """Mean of the same time on the last ``days`` days known at the issue time (PV's simple baseline:
    the weather decides PV, not the calendar); 0 where none is known."""
    issue = issue_instant(target_day - timedelta(days=1), zone, issue_local)
    known_before = min(history.index_of(issue), len(values))
    first, n = day_slots(target_day, zone)
    idx = history.index_of(first) + np.arange(n)
    stacked = np.full((days, n), np.nan)
    for k in range(days):
        src = idx - SLOTS_PER_DAY * (k + 1)
        ok = (src >= 0) & (src < known_before)
        stacked[k, ok] = values[src[ok]]
    counts = np.count_nonzero(~np.isnan(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    out: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return out
