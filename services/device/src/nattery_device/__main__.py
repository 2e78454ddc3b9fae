"""``nattery-device``: serve (default) or migrate."""

from __future__ import annotations

from pathlib import Path

from nattery_device.app import SCHEMA
from nattery_device.settings import get_settings
from nattery_shared.cli import service_cli

cli = service_cli(
    name="device",
    settings_factory=get_settings,
    app_path="nattery_device.app:create_app",
    migrations_dir=Path(__file__).parent / "migrations",
    schema=SCHEMA,
)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
