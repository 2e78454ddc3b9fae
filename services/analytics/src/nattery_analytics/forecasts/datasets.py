"""Half-hourly load CSVs (``timestamp_utc,load_kw``, empty = no reading) as a ``LoadHistory``: the
metered households of the benchmark and the tests (services/analytics/data/README.md)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np

from nattery_analytics.forecasts.features import SLOT, LoadHistory

DATA_DIR = Path(__file__).resolve().parents[3] / "data"  # services/analytics/data (not in the wheel)
HOUSEHOLDS = {
    "emhass_fr": "emhass_fr_household_load_halfhourly_kw_2024-2025.csv",
    "uci_sceaux": "uci_sceaux_household_load_halfhourly_kw_2008.csv",
}
HOUSEHOLD_TIMEZONE = "Europe/Paris"  # both houses are in France


def read_load_csv(path: Path) -> LoadHistory:
    with path.open(newline="") as f:
        rows = [(datetime.fromisoformat(r["timestamp_utc"]), r["load_kw"].strip()) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path}: no rows")
    start = rows[0][0]
    load = np.full(int((rows[-1][0] - start) // SLOT) + 1, np.nan)
    for ts, value in rows:
        if value:
            load[int((ts - start) // SLOT)] = float(value)
    return LoadHistory(start, load)
