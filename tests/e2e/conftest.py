"""End-to-end fixtures: every service's migrations on the test database; the device tests' helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN

REPO = Path(__file__).resolve().parents[2]
# Helpers shared with services/device/tests and services/integration/tests (no packages there).
sys.path.insert(0, str(REPO / "services" / "device" / "tests"))


@pytest.fixture(scope="session", autouse=True)
def e2e_migrated() -> Iterator[None]:
    from device_test_helpers import remove_provisioned

    for service in ("device", "trading", "integration"):
        migrations.upgrade(
            REPO / f"services/{service}/src/nattery_{service}/migrations", TEST_PG_DSN, service
        )
    yield
    remove_provisioned()
