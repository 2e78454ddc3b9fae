"""``nattery-analytics``: serve (default) or migrate."""

from __future__ import annotations

from pathlib import Path

from nattery_analytics.app import SCHEMA
from nattery_analytics.settings import get_settings
from nattery_shared.cli import service_cli

cli = service_cli(
    name="analytics",
    settings_factory=get_settings,
    app_path="nattery_analytics.app:create_app",
    migrations_dir=Path(__file__).parent / "migrations",
    schema=SCHEMA,
)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
