"""Alert rules and alerts as the API shows them. The telemetry fields a rule may watch are those the
telemetry contract defines: the numeric points of every register map in ``nattery_contracts.modbus``."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from nattery_contracts.events import AlertSeverity
from nattery_contracts.modbus import available_profiles, load_profile
from nattery_contracts.modbus.registers import Kind
from nattery_device.devices.schemas import DeviceKind
from nattery_shared.validation import Finite, Text


def _known_fields() -> frozenset[str]:
    names: set[str] = set()
    for profile in available_profiles():
        names.update(
            p.name for p in load_profile(profile).points if p.kind not in (Kind.ASCII, Kind.BITFIELD)
        )
    return frozenset(names)


KNOWN_FIELDS = _known_fields()


class RuleKind(StrEnum):
    THRESHOLD = "threshold"  # field <operator> value, for at least for_s
    BAND = "band"  # field outside [low, high], for at least for_s
    FAULT = "fault"  # a fault code (fnmatch pattern, e.g. F*) active on the device
    OFFLINE = "offline"  # no telemetry for offline_after_s


class Operator(StrEnum):
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class StateFilter(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    OPEN = "open"  # firing or acknowledged


Seconds = Annotated[int, Field(ge=0, le=7 * 86400)]


class RuleIn(BaseModel):
    """A rule, created or replaced whole. Which fields apply depends on ``kind``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(min_length=1, max_length=200)]
    kind: RuleKind
    severity: AlertSeverity = AlertSeverity.WARNING
    enabled: bool = True
    site_id: uuid.UUID | None = None
    device_kind: DeviceKind | None = None
    device_id: uuid.UUID | None = None
    field: Annotated[str | None, Field(max_length=64)] = None
    operator: Operator | None = None
    value: Finite | None = None
    low: Finite | None = None
    high: Finite | None = None
    hysteresis: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] = 0.0
    for_s: Seconds = 0
    clear_for_s: Seconds = 0
    code: Annotated[Text | None, Field(min_length=1, max_length=64)] = None
    offline_after_s: Annotated[int | None, Field(ge=1, le=7 * 86400)] = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, name: str | None) -> str | None:
        if name is not None and name not in KNOWN_FIELDS:
            raise ValueError(f"unknown telemetry field {name!r}")
        return name

    @model_validator(mode="after")
    def _complete(self) -> RuleIn:
        need: dict[RuleKind, tuple[str, ...]] = {
            RuleKind.THRESHOLD: ("field", "operator", "value"),
            RuleKind.BAND: ("field", "low", "high"),
            RuleKind.FAULT: (),
            RuleKind.OFFLINE: ("offline_after_s",),
        }
        missing = [name for name in need[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind.value} rule needs {', '.join(missing)}")
        if (
            self.kind is RuleKind.BAND
            and self.low is not None
            and self.high is not None
            and self.low >= self.high
        ):
            raise ValueError("low must be below high")
        return self


class Rule(RuleIn):
    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    org_id: uuid.UUID
    default_key: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @field_validator("field")
    @classmethod
    def _known_field(cls, name: str | None) -> str | None:
        return name  # stored rules are shown as they are, even if the contract dropped a field


class Alert(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    rule_id: uuid.UUID | None
    rule_name: str
    rule_kind: RuleKind
    severity: AlertSeverity
    state: AlertState
    message: str
    value: float | None
    raised_at: AwareDatetime
    acknowledged_at: AwareDatetime | None
    acknowledged_by: str | None
    acknowledge_comment: str | None
    resolved_at: AwareDatetime | None
    resolved_by: str | None
    resolution: str | None
    resolve_comment: str | None


class HistoryEntry(BaseModel):
    action: str
    at: AwareDatetime
    by: str | None
    comment: str | None


class AlertDetail(Alert):
    history: list[HistoryEntry]


class AlertPage(BaseModel):
    items: list[Alert]
    total: int
    limit: int
    offset: int


class AlertAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Annotated[Text | None, Field(max_length=2000)] = None
