"""Every service's migrations apply to head, and running them again changes nothing."""

import logging
from pathlib import Path

import psycopg
import pytest

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "device": "device",
    "trading": "trading",
    "analytics": "analytics",
    "user": "users",
    "integration": "integration",
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_migrations_twice_is_a_no_op(service: str, caplog: pytest.LogCaptureFixture) -> None:
    schema = SERVICES[service]
    migrations_dir = ROOT / f"services/{service}/src/nattery_{service}/migrations"
    migrations.upgrade(migrations_dir, TEST_PG_DSN, schema)
    head = migrations.current_revision(migrations_dir, TEST_PG_DSN, schema)
    assert head is not None

    with psycopg.connect(TEST_PG_DSN) as conn:
        before = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        ).fetchall()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alembic"):
        migrations.upgrade(migrations_dir, TEST_PG_DSN, schema)
    assert not [r for r in caplog.records if "Running upgrade" in r.getMessage()]
    assert migrations.current_revision(migrations_dir, TEST_PG_DSN, schema) == head
    with psycopg.connect(TEST_PG_DSN) as conn:
        after = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        ).fetchall()
    assert after == before
    assert ("alembic_version",) in after and ("processed_events",) in after
