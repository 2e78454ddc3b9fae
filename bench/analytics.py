"""bench-analytics: the day-ahead load forecast's skill on two real metered households.

    analytics.load_forecast_skill.<house>  per house
    analytics.load_forecast_skill          the lower of the two (target >= 0.15)

skill = 1 - MAE(forecast) / MAE(same time yesterday), over every half-hour of every day of each house's
year (services/analytics/data/README.md), walk-forward: each day is forecast at 16:00 local the day
before, by the production code (nattery_analytics.forecasts: evaluation.walk_forward -> model.LoadModel,
model.forecast_day), with a model re-trained every 7 days on the slots that ended before that issue
time; days with less than 14 days of history are forecast by the fallbacks (seasonal-naive median from 2
days of history, persistence before) and count too.
The reference takes the load 24 h earlier even when part of it was not yet known at 16:00 (a stricter
reference than any forecast issued at 16:00 could use). No temperature: these files have none.

Run: ``uv run python bench/analytics.py`` (``make bench-analytics``); about 2-6 min on 2 cores.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from common import emit, note

from nattery_analytics.forecasts.datasets import (
    DATA_DIR,
    HOUSEHOLD_TIMEZONE,
    HOUSEHOLDS,
    read_load_csv,
)
from nattery_analytics.forecasts.evaluation import walk_forward
from nattery_analytics.forecasts.model import ModelConfig

RETRAIN_EVERY_DAYS = 7
TARGET = 0.15


def score(house: str) -> dict[str, Any]:
    zone = ZoneInfo(HOUSEHOLD_TIMEZONE)
    history = read_load_csv(DATA_DIR / HOUSEHOLDS[house])
    first = history.start.astimezone(zone).date() + timedelta(days=2)
    last = (history.end - timedelta(minutes=1)).astimezone(zone).date()
    started = time.perf_counter()
    skill = walk_forward(history, zone, first, last, ModelConfig(), retrain_every_days=RETRAIN_EVERY_DAYS)
    return {
        "house": house,
        "skill": skill.skill,
        "mae_kw": skill.mae_kw,
        "reference_mae_kw": skill.reference_mae_kw,
        "days": skill.days,
        "slots": skill.slots,
        "fallback_days": skill.fallback_days,
        "retrains": skill.retrains,
        "window": f"{first} .. {last}",
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    note("analytics", f"walk-forward over {', '.join(HOUSEHOLDS)} (one process per house)")
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(score, HOUSEHOLDS))
    reference = "MAE of 'same time yesterday' (the load 24 h earlier) on the same slots"
    for r in results:
        emit(
            f"analytics.load_forecast_skill.{r['house']}",
            round(r["skill"], 4),
            "1",
            reference=reference,
            target=f">= {TARGET}",
            mae_kw=round(r["mae_kw"], 4),
            reference_mae_kw=round(r["reference_mae_kw"], 4),
            days=r["days"],
            slots=r["slots"],
            fallback_days=r["fallback_days"],
            retrains=r["retrains"],
            window=r["window"],
            seconds=round(r["seconds"], 1),
        )
    worst = min(results, key=lambda r: r["skill"])
    emit(
        "analytics.load_forecast_skill",
        round(worst["skill"], 4),
        "1",
        reference=reference + "; the lower of the two households",
        target=f">= {TARGET}",
        house=worst["house"],
        issued="16:00 Europe/Paris the day before",
        retrain_every_days=RETRAIN_EVERY_DAYS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
