"""Alert rule conditions (pure): thresholds and bands, with the hysteresis a firing rule clears past."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from nattery_device.alerts.evaluator import Check, PairState
from nattery_device.alerts.schemas import KNOWN_FIELDS, Rule, RuleIn


def _rule(**fields: Any) -> Rule:
    now = datetime.now(UTC)
    return Rule(id=uuid.uuid4(), org_id=uuid.uuid4(), name="r", created_at=now, updated_at=now, **fields)


@pytest.mark.parametrize(
    ("operator", "raising", "quiet", "still_firing", "cleared"),
    [
        ("gt", 51, 50, 48, 46.9),
        ("ge", 50, 49.9, 47, 46.9),
        ("lt", 9, 10, 12, 13.1),
        ("le", 10, 10.1, 13, 13.1),
    ],
)
def test_threshold_with_hysteresis(
    operator: str, raising: float, quiet: float, still_firing: float, cleared: float
) -> None:
    value = 50 if operator in ("gt", "ge") else 10
    check = Check.of(
        _rule(kind="threshold", field="battery_temperature_c", operator=operator, value=value, hysteresis=3),
        PairState(),
    )
    assert check.breached(raising, False) and not check.breached(quiet, False)
    assert check.breached(still_firing, True) and not check.breached(cleared, True)


def test_band_with_hysteresis() -> None:
    check = Check.of(_rule(kind="band", field="grid_voltage_v", low=210, high=250, hysteresis=5), PairState())
    assert check.breached(209, False) and check.breached(251, False) and not check.breached(230, False)
    assert check.breached(214, True) and check.breached(246, True) and not check.breached(230, True)


def test_rule_validation_names_the_field() -> None:
    assert {"battery_soc_pct", "battery_temperature_c", "grid_power_w", "flow_rate_m3_per_h"} <= KNOWN_FIELDS
    with pytest.raises(ValidationError, match="unknown telemetry field 'soc'"):
        RuleIn(name="x", kind="threshold", field="soc", operator="lt", value=10)
    with pytest.raises(ValidationError, match="needs operator, value"):
        RuleIn(name="x", kind="threshold", field="battery_soc_pct")
    with pytest.raises(ValidationError, match="low must be below high"):
        RuleIn(name="x", kind="band", field="battery_soc_pct", low=20, high=10)
    with pytest.raises(ValidationError, match="needs offline_after_s"):
        RuleIn(name="x", kind="offline")
