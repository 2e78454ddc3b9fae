"""``nattery-integration``: serve (default), migrate, or rekey (re-encrypt connection secrets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from nattery_integration.app import SCHEMA
from nattery_integration.connections.crypto import SecretBox
from nattery_integration.connections.service import rekey as rekey_connections
from nattery_integration.settings import IntegrationSettings, get_settings
from nattery_shared import db
from nattery_shared.cli import service_cli

cli = service_cli(
    name="integration",
    settings_factory=get_settings,
    app_path="nattery_integration.app:create_app",
    migrations_dir=Path(__file__).parent / "migrations",
    schema=SCHEMA,
)


async def run_rekey(settings: IntegrationSettings) -> int:
    pool = db.create_pool(settings.postgres, schema=SCHEMA, name="integration-rekey")
    await pool.open(wait=True, timeout=10)
    try:
        return await rekey_connections(pool, SecretBox(settings.integration.secrets_keyring))
    finally:
        await pool.close()


@cli.command()
def rekey() -> None:
    """Re-encrypt every connection's secrets under the keyring's current key
    (NATTERY_INTEGRATION__SECRETS_KEYRING__CURRENT); the audit events go out through the outbox."""
    settings = get_settings()
    count = asyncio.run(run_rekey(settings))
    typer.echo(
        f"integration: {count} connection(s) re-encrypted under key "
        f"{settings.integration.secrets_keyring.current!r}"
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
