"""The command line every service shares: ``serve`` (default) and ``migrate``.

A service adds its own commands to the returned typer app (``app.command()(fn)``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
import uvicorn

from nattery_shared import migrations
from nattery_shared.settings import ServiceSettings


def service_cli(
    *,
    name: str,
    settings_factory: Callable[[], ServiceSettings],
    app_path: str,
    migrations_dir: Path,
    schema: str,
) -> typer.Typer:
    cli = typer.Typer(help=f"Nattery {name} service", no_args_is_help=False, add_completion=False)

    @cli.callback(invoke_without_command=True)
    def default(ctx: typer.Context) -> None:
        """Serve the API when no command is given."""
        if ctx.invoked_subcommand is None:
            serve()

    @cli.command()
    def serve() -> None:
        """Run the HTTP API (host and port from NATTERY_HOST / NATTERY_PORT)."""
        settings = settings_factory()
        uvicorn.run(
            app_path,
            factory=True,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
        )

    @cli.command()
    def migrate() -> None:
        """Apply this service's database migrations (a no-op when up to date)."""
        settings = settings_factory()
        migrations.upgrade(migrations_dir, settings.postgres.dsn.get_secret_value(), schema)
        typer.echo(
            f"{name}: migrations at {migrations.current_revision(migrations_dir, settings.postgres.dsn.get_secret_value(), schema)}"
        )

    return cli
