"""Migrations with alembic, raw SQL, one schema and one version table per service.

A service keeps ``migrations/env.py`` (two lines: import and call :func:`run_env`) and
``migrations/versions/*.py`` written with ``op.execute("...")``. :func:`upgrade` runs them to head;
running it twice is a no-op.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine, pool, text


def sqlalchemy_url(dsn: str) -> str:
    """alembic speaks SQLAlchemy; point it at psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def alembic_config(migrations_dir: Path, dsn: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(migrations_dir: Path, dsn: str, schema: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, dsn, schema), revision)


def current_revision(migrations_dir: Path, dsn: str, schema: str) -> str | None:
    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:t)"), {"t": f"{schema}.alembic_version"}
        ).scalar_one_or_none()
        if exists is None:
            return None
        return conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version')).scalar_one_or_none()


def run_env() -> None:
    """Body of every service's ``migrations/env.py`` (online mode only)."""
    cfg = context.config
    schema: str = cfg.attributes["schema"]
    engine = create_engine(cfg.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn.execute(text(f'SET search_path TO "{schema}", public'))
        conn.commit()
        context.configure(connection=conn, version_table_schema=schema, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
