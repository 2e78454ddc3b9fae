import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from nattery_contracts.events import (
    AlertResolved,
    CloudEvent,
    DeviceStatusChanged,
    EventType,
    make_event,
    parse_event,
)
from nattery_contracts.mqtt import (
    Command,
    CommandType,
    SafetyLimits,
    SetScheduleParams,
    Telemetry,
    TopicSuffix,
    parse_topic,
    topic,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_topic_round_trip_and_refuses_escape() -> None:
    name = topic("site-a", "inv-1", TopicSuffix.COMMAND_ACK)
    assert name == "nattery/v1/site-a/inv-1/command/ack"
    parsed = parse_topic(name)
    assert (parsed.site, parsed.device, parsed.suffix) == ("site-a", "inv-1", TopicSuffix.COMMAND_ACK)
    with pytest.raises(ValueError):
        topic("site-a/#", "inv-1", "telemetry")
    with pytest.raises(ValueError):
        parse_topic("nattery/v1/site-a/inv-1/bogus")


def test_telemetry_rejects_non_finite_unknown_keys_and_naive_time() -> None:
    Telemetry(ts=NOW, seq=1, values={"battery_power_w": -1200.0})
    with pytest.raises(ValidationError):
        Telemetry(ts=NOW, seq=1, values={"battery_power_w": float("nan")})
    with pytest.raises(ValidationError):
        Telemetry.model_validate({"ts": NOW, "seq": 1, "values": {"x": 1}, "extra": 1})
    with pytest.raises(ValidationError):
        Telemetry(ts=datetime(2026, 1, 1), seq=1, values={"x": 1.0})
    with pytest.raises(ValidationError):
        Telemetry(ts=NOW, seq=1, values={"Bad Name": 1.0})


def test_command_validates_params_by_type_and_expiry() -> None:
    cmd = Command(
        id=uuid.uuid4(),
        type=CommandType.SET_POWER,
        params={"battery_power_w": -2500},
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
    )
    assert not cmd.is_expired(NOW)
    assert cmd.is_expired(NOW + timedelta(minutes=5))
    with pytest.raises(ValidationError):
        Command(
            id=uuid.uuid4(),
            type=CommandType.SET_MODE,
            params={"mode": "turbo"},
            issued_at=NOW,
            expires_at=NOW + timedelta(minutes=1),
        )
    with pytest.raises(ValidationError):
        Command(id=uuid.uuid4(), type=CommandType.REFRESH, issued_at=NOW, expires_at=NOW)


def test_schedule_slots_must_not_overlap() -> None:
    slot = {"start": NOW, "end": NOW + timedelta(minutes=30), "mode": "charge", "battery_power_w": -3000}
    overlapping = {**slot, "start": NOW + timedelta(minutes=15), "end": NOW + timedelta(minutes=45)}
    with pytest.raises(ValidationError, match="overlap"):
        SetScheduleParams.model_validate(
            {"slots": [slot, overlapping], "valid_until": NOW + timedelta(hours=1)}
        )


def test_safety_limits_consistency() -> None:
    with pytest.raises(ValidationError):
        SafetyLimits(
            soc_min_pct=80,
            soc_max_pct=20,
            max_charge_w=1,
            max_discharge_w=1,
            battery_temp_min_c=0,
            battery_temp_max_c=45,
            export_limit_w=0,
        )


def test_cloudevent_round_trip_validates_data_by_type() -> None:
    data = AlertResolved(alert_id=uuid.uuid4(), org_id=uuid.uuid4(), site_id=uuid.uuid4(), at=NOW)
    event = make_event(EventType.ALERT_RESOLVED, data, source="/services/device")
    parsed = parse_event(event.model_dump_json())
    assert parsed.id == event.id and parsed.data == data
    with pytest.raises(TypeError):
        make_event(EventType.DEVICE_STATUS_CHANGED, data, source="/x")
    wrong = CloudEvent[dict](type=EventType.DEVICE_STATUS_CHANGED, source="/x", data={"status": "online"})
    with pytest.raises(ValidationError):
        parse_event(wrong.model_dump_json())
    with pytest.raises(ValidationError):
        parse_event(b'{"not": "an event"}')
    assert DeviceStatusChanged.model_fields["status"].is_required()
