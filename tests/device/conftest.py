"""End-to-end fixtures: device-service in process, the real inverter simulator and modbus-bridge."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN

REPO = Path(__file__).resolve().parents[2]
# Helpers shared with services/device/tests (--import-mode=importlib gives them no package).
sys.path.insert(0, str(REPO / "services" / "device" / "tests"))


@pytest.fixture(scope="session", autouse=True)
def device_migrated() -> Iterator[None]:
    from device_test_helpers import remove_provisioned

    migrations.upgrade(REPO / "services/device/src/nattery_device/migrations", TEST_PG_DSN, "device")
    yield
    remove_provisioned()
