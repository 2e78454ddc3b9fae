"""Day-ahead features of a site's half-hourly load, as pure functions of its history (no I/O).

A forecast is *issued* at a local time on day D (16:00 by default) for every half-hour slot of local day
D+1. Every feature of a target slot uses only slots that ended before the issue time, so training rows
built here for past days are exactly what the model would have seen live (walk-forward honest).

The history is one uniform grid of UTC half-hours (``LoadHistory``); NaN means "no reading". Gaps stay
NaN: the gradient-boosting model routes missing values itself, and the persistence fallback skips them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SLOT = timedelta(minutes=30)
SLOTS_PER_DAY = 48
LAG_DAYS = 7  # same time on each of the last seven days

FEATURES: tuple[str, ...] = (
    "half_hour_of_day",  # local
    "weekday",  # local, Monday = 0
    "is_weekend_or_holiday",
    "lead_h",  # hours from issue to the slot's start
    *(f"lag_{k}d_kw" for k in range(1, LAG_DAYS + 1)),  # same time k days before (NaN if not yet known)
    "same_time_mean_7d_kw",
    "same_time_median_7d_kw",
    "same_time_wide_median_14d_kw",  # the slot and its neighbours (±30 min) over 14 days
    "same_time_weekday_mean_4w_kw",  # same weekday, same time, last four weeks
    # No day-level features (mean of the last 2 h / 24 h / 7 days, 10th / 90th percentile of the week):
    # constant over a target day, they let the trees split on single days, and dropping them raised the
    # walk-forward skill on both houses (bench/analytics.py: EMHASS 0.113 -> 0.120, Sceaux 0.223 -> 0.225).
    "temperature_c",  # at the slot (a weather forecast), NaN when the site has none
)


@dataclass(frozen=True)
class LoadHistory:
    """Half-hourly mean load from ``start`` (UTC, on a half-hour), oldest first; NaN = no reading.
    ``temperature_c`` is the same grid of temperatures (observed, then forecast beyond the load), if any."""

    start: datetime
    load_kw: FloatArray
    temperature_c: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise ValueError("history start must be UTC")
        if (self.start - datetime(1970, 1, 1, tzinfo=UTC)) % SLOT:
            raise ValueError("history start must be on a half-hour")

    @property
    def end(self) -> datetime:
        """End of the last slot."""
        return self.start + SLOT * len(self.load_kw)

    def index_of(self, t: datetime) -> int:
        """Slot index of ``t`` (may lie outside the grid); ``t`` is floored to its half-hour."""
        return int((t - self.start) // SLOT)

    def time_of(self, index: int) -> datetime:
        return self.start + SLOT * index

    def known_days(self) -> float:
        """Days' worth of slots that have a reading."""
        return float(np.count_nonzero(~np.isnan(self.load_kw))) / SLOTS_PER_DAY


def issue_instant(day: date, zone: ZoneInfo, issue_local: time) -> datetime:
    """The UTC instant of ``issue_local`` on local ``day`` (a non-existent local time moves forward)."""
    local = datetime.combine(day, issue_local, tzinfo=zone)
    return local.astimezone(UTC).astimezone(zone).astimezone(UTC)


def day_slots(day: date, zone: ZoneInfo) -> tuple[datetime, int]:
    """First UTC slot of local ``day`` and its number of half-hours (46 or 50 on clock-change days)."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, int((end - start) // SLOT)


def recent_level_ratio(history: LoadHistory, target_day: date, zone: ZoneInfo, issue_local: time) -> float:
    """Mean load over the 24 h before the issue time divided by the mean over the 7 days before it: how
    busy the house is now against its week (1.0 when either is unknown or the week is all zeros)."""
    known_before = min(
        history.index_of(issue_instant(target_day - timedelta(days=1), zone, issue_local)),
        len(history.load_kw),
    )

    def mean(slots: int) -> float:
        window = history.load_kw[max(known_before - slots, 0) : max(known_before, 0)]
        known = window[~np.isnan(window)]
        return float(known.mean()) if known.size else float("nan")

    day, week = mean(SLOTS_PER_DAY), mean(SLOTS_PER_DAY * 7)
    if not (np.isfinite(day) and np.isfinite(week)) or week <= 0.0:
        return 1.0
    return day / week


def _take(values: FloatArray, idx: IntArray, available_before: int) -> FloatArray:
    """``values[idx]`` where ``0 <= idx < available_before``, NaN elsewhere."""
    ok = (idx >= 0) & (idx < min(available_before, len(values)))
    out = np.full(idx.shape, np.nan)
    out[ok] = values[idx[ok]]
    return out


def day_ahead_rows(
    history: LoadHistory,
    target_day: date,
    zone: ZoneInfo,
    issue_local: time,
    holidays: frozenset[date] = frozenset(),
) -> tuple[IntArray, FloatArray]:
    """Slot indices of local ``target_day`` (on ``history``'s grid, possibly past its end) and their
    feature matrix (rows in ``FEATURES`` order), for a forecast issued at ``issue_local`` the day before."""
    issue = issue_instant(target_day - timedelta(days=1), zone, issue_local)
    known_before = history.index_of(issue)  # slots [0, known_before) ended by the issue time
    first, n = day_slots(target_day, zone)
    idx = history.index_of(first) + np.arange(n, dtype=np.int64)
    load = history.load_kw

    starts = [first + SLOT * i for i in range(n)]
    local = [s.astimezone(zone) for s in starts]
    half_hour = np.array([lt.hour * 2 + lt.minute // 30 for lt in local], dtype=np.float64)
    weekday = float(target_day.weekday())
    off_day = 1.0 if target_day.weekday() >= 5 or target_day in holidays else 0.0
    lead_h = np.array([(s - issue) / timedelta(hours=1) for s in starts])

    lags = np.stack([_take(load, idx - SLOTS_PER_DAY * k, known_before) for k in range(1, LAG_DAYS + 1)])
    with warnings.catch_warnings():  # an all-NaN column (a new site) is expected, not worth a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lag_mean = np.nanmean(lags, axis=0)
        lag_median = np.nanmedian(lags, axis=0)
    wide = np.stack(
        [
            _take(load, idx - SLOTS_PER_DAY * k + shift, known_before)
            for k in range(1, 15)
            for shift in (-1, 0, 1)
        ]
    )
    weekly = np.stack([_take(load, idx - SLOTS_PER_DAY * 7 * k, known_before) for k in range(1, 5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wide_median = np.nanmedian(wide, axis=0)
        weekday_mean = np.nanmean(weekly, axis=0)
    if history.temperature_c is not None:
        temperature = _take(history.temperature_c, idx, len(history.temperature_c))
    else:
        temperature = np.full(n, np.nan)

    columns = [
        half_hour,
        np.full(n, weekday),
        np.full(n, off_day),
        lead_h,
        *lags,
        lag_mean,
        lag_median,
        wide_median,
        weekday_mean,
        temperature,
    ]
    return idx, np.column_stack(columns)
