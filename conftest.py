"""Root conftest: shared fixtures for every package's tests (real local servers, see docs/CONVENTIONS.md).

Each test session starts from empty service schemas in the ``nattery_test`` database, migrated to head
by each service's own migrations, so a migration edited during development, or rows left by an earlier
run, can never make a run pass or fail by accident. Redis db 15 is flushed for the same reason.
Because of that reset, sessions on one machine take turns: a machine-wide lock
(``nattery_shared.testing.lock_test_servers``) makes a second session, or ``bench/ingest.py``, wait.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TEST_REDIS_URL, lock_test_servers

pytest_plugins = ["nattery_shared.testing", "pytester"]

ROOT = Path(__file__).parent
# service -> its PostgreSQL schema
SERVICE_SCHEMAS = {
    "device": "device",
    "trading": "trading",
    "analytics": "analytics",
    "user": "users",
    "integration": "integration",
}


_lock_fd: int | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _lock_fd
    if hasattr(session.config, "workerinput"):  # xdist workers: the controller already reset
        return
    # Held until this process ends: another session (or a benchmark) waits rather than wiping ours.
    _lock_fd = lock_test_servers("a pytest session")
    with psycopg.connect(TEST_PG_DSN, autocommit=True) as conn:
        for schema in SERVICE_SCHEMAS.values():
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    for service, schema in SERVICE_SCHEMAS.items():
        migrations.upgrade(ROOT / f"services/{service}/src/nattery_{service}/migrations", TEST_PG_DSN, schema)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
