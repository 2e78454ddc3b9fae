"""A PNG of one week of a back-test: prices, planned/executed battery power and grid, SOC."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from nattery_trading.backtest.engine import RunResult
from nattery_trading.backtest.inputs import BacktestInput


def write_week_chart(data: BacktestInput, run: RunResult, start: datetime, path: Path, days: int = 7) -> None:
    t = np.array(data.times)
    sel = (t >= start) & (t < start + timedelta(days=days))
    if not sel.any():
        raise ValueError(f"{start:%Y-%m-%d} is outside the back-test period")
    x = t[sel]
    fig, axes = plt.subplots(3, 1, figsize=(14, 9), sharex=True)
    ax = axes[0]
    ax.step(x, data.import_price[sel], where="post", label="import p/kWh", color="tab:red")
    ax.step(x, data.export_price[sel], where="post", label="export p/kWh", color="tab:green")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("p/kWh")
    ax.legend(loc="upper right")
    ax.set_title(f"Back-test week from {start:%Y-%m-%d} (UTC)")
    ax = axes[1]
    ax.step(x, run.battery_kw[sel], where="post", label="battery kW (+ discharge)", color="tab:blue")
    ax.step(x, run.grid_kw[sel], where="post", label="grid kW (+ import)", color="black", lw=0.8)
    ax.fill_between(x, data.pv_kw[sel], step="post", alpha=0.25, color="gold", label="PV kW")
    ax.step(x, data.load_kw[sel], where="post", label="load kW", color="tab:purple", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("kW")
    ax.legend(loc="upper right", ncol=4)
    ax = axes[2]
    ax.plot(x, run.soc_pct[sel], color="tab:orange")
    ax.set_ylim(0, 100)
    ax.set_ylabel("SOC %")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))  # type: ignore[no-untyped-call]
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
