"""``nattery-trading``: serve (default), migrate, backtest, build-backtest-input, load-prices, fleet-worker."""

from __future__ import annotations

from pathlib import Path

from nattery_shared.cli import service_cli
from nattery_trading.app import SCHEMA
from nattery_trading.backtest.cli import register as register_backtest
from nattery_trading.schedules.worker import fleet_worker
from nattery_trading.settings import get_settings
from nattery_trading.tariffs.loader import load_prices

cli = service_cli(
    name="trading",
    settings_factory=get_settings,
    app_path="nattery_trading.app:create_app",
    migrations_dir=Path(__file__).parent / "migrations",
    schema=SCHEMA,
)
register_backtest(cli)
cli.command("load-prices")(load_prices)
cli.command("fleet-worker")(fleet_worker)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
