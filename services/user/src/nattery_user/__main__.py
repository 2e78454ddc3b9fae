"""``nattery-user``: serve (default), migrate, bootstrap-admin, rotate-keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from nattery_shared.cli import service_cli
from nattery_user.context import SCHEMA, open_context
from nattery_user.settings import get_settings

cli = service_cli(
    name="user",
    settings_factory=get_settings,
    app_path="nattery_user.app:create_app",
    migrations_dir=Path(__file__).parent / "migrations",
    schema=SCHEMA,
)


@cli.command("bootstrap-admin")
def bootstrap_admin(
    org: str = typer.Option(None, help="org name (default: settings user.demo_org_name)"),
    email: str = typer.Option(None, help="admin email (default: settings user.demo_admin_email)"),
) -> None:
    """Create the first admin of the demo org; prints the generated password once (idempotent)."""
    from nattery_user.accounts.service import bootstrap_admin as run

    settings = get_settings()

    async def main() -> None:
        async with open_context(settings) as (ctx, _):
            result = await run(
                ctx,
                org_name=org or settings.user.demo_org_name,
                email=email or settings.user.demo_admin_email,
            )
        if result.created:
            typer.echo(f"created admin {result.email} in org {result.org_id}")
            typer.echo(f"password (shown once): {result.password}")
        else:
            typer.echo(f"admin {result.email} already exists in org {result.org_id}: nothing to do")

    asyncio.run(main())


@cli.command("rotate-keys")
def rotate_keys(
    publish_lead_s: float = typer.Option(None, help="seconds before the new key signs (default: settings)"),
) -> None:
    """Publish a new signing key; it signs after the lead time, old keys stay until their tokens expire."""

    async def main() -> None:
        async with open_context(get_settings()) as (ctx, _):
            kid = await ctx.keyring.rotate(publish_lead_s=publish_lead_s)
        typer.echo(f"new signing key {kid}")

    asyncio.run(main())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
