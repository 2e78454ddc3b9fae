"""Pluggable load/PV forecasts: baselines from history and consumer-provided forecasts."""

from nattery_trading.forecasting.base import (
    Forecaster,
    Persistence,
    ProvidedForecast,
    RecentCorrection,
    SameSlotLastWeeks,
    SameTimeLastDays,
)

__all__ = [
    "Forecaster",
    "Persistence",
    "ProvidedForecast",
    "RecentCorrection",
    "SameSlotLastWeeks",
    "SameTimeLastDays",
]
