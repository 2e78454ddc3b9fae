"""``nattery-trading load-prices``: load a market price CSV into ``trading.prices``.

Accepts ``timestamp_utc`` (period start, ISO 8601, UTC offset or ``Z``) and a price column
(``price_p_per_kwh``, ``price_p_per_kwh_inc_vat`` or ``import_price_p_per_kwh``). Each period ends where
the next begins (the last one lasts as long as the one before). Idempotent: reloading overwrites.
"""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from nattery_shared import db
from nattery_trading.app import SCHEMA
from nattery_trading.settings import get_settings
from nattery_trading.tariffs.repository import TariffRepository

PRICE_COLUMNS = ("price_p_per_kwh", "price_p_per_kwh_inc_vat", "import_price_p_per_kwh")


def read_price_csv(path: Path) -> list[tuple[datetime, datetime, float]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        col = next((c for c in PRICE_COLUMNS if c in (reader.fieldnames or ())), None)
        if col is None or "timestamp_utc" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: needs timestamp_utc and one of {', '.join(PRICE_COLUMNS)}")
        rows = [
            (datetime.fromisoformat(r["timestamp_utc"].replace("Z", "+00:00")).astimezone(UTC), float(r[col]))
            for r in reader
        ]
    rows.sort()
    if len(rows) < 2:
        raise ValueError(f"{path}: needs at least two prices")
    out = []
    for i, (start, price) in enumerate(rows):
        end = rows[i + 1][0] if i + 1 < len(rows) else start + (start - rows[i - 1][0])
        out.append((start, end, price))
    return out


def load_prices(
    file: Annotated[Path, typer.Argument(help="CSV with timestamp_utc and a price column")],
    market: Annotated[str, typer.Option(help="e.g. octopus-agile")],
    direction: Annotated[str, typer.Option(help="import or export")] = "import",
    region: Annotated[str, typer.Option(help="e.g. J")] = "",
) -> None:
    """Load market prices from a CSV into the trading database (idempotent)."""
    if direction not in ("import", "export"):
        raise typer.BadParameter("--direction must be import or export")
    points = read_price_csv(file)

    async def run() -> int:
        settings = get_settings()
        pool = db.create_pool(settings.postgres, schema=SCHEMA, name="trading-load-prices")
        await db.open_pool(pool)
        try:
            return await TariffRepository(pool).upsert_prices(
                market, region, direction, points, datetime.now(UTC)
            )
        finally:
            await pool.close()

    n = asyncio.run(run())
    typer.echo(
        f"{n} {market} {region} {direction} prices loaded ({points[0][0]:%Y-%m-%d} → {points[-1][1]:%Y-%m-%d})"
    )
