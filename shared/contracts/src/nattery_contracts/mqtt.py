"""MQTT payloads between a site's bridge and device-service (ARCHITECTURE §4).

Topic layout: ``nattery/v1/{site}/{device}/{suffix}``. Every model forbids unknown keys so that a
malformed payload is rejected at the boundary instead of half-understood.
"""

from __future__ import annotations

import itertools
import math
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

TOPIC_PREFIX = "nattery/v1"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
_SLUG_RE = re.compile(SLUG_PATTERN)

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, description="lowercase site or device slug")]


class TopicSuffix(StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    EVENT = "event"
    COMMAND = "command"
    COMMAND_ACK = "command/ack"


def topic(site: str, device: str, suffix: TopicSuffix | str) -> str:
    """Build ``nattery/v1/{site}/{device}/{suffix}``; refuses slugs that would escape their prefix."""
    for part in (site, device):
        if not _SLUG_RE.match(part):
            raise ValueError(f"invalid slug {part!r} for an MQTT topic")
    return f"{TOPIC_PREFIX}/{site}/{device}/{TopicSuffix(suffix).value}"


class ParsedTopic(BaseModel):
    site: str
    device: str
    suffix: TopicSuffix


def parse_topic(name: str) -> ParsedTopic:
    """Split an incoming topic; raises ValueError for anything outside the contract."""
    parts = name.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != TOPIC_PREFIX:
        raise ValueError(f"topic {name!r} is not under {TOPIC_PREFIX}/")
    site, device, suffix = parts[2], parts[3], "/".join(parts[4:])
    if not (_SLUG_RE.match(site) and _SLUG_RE.match(device)):
        raise ValueError(f"topic {name!r} has an invalid slug")
    return ParsedTopic(site=site, device=device, suffix=TopicSuffix(suffix))


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Telemetry(_Payload):
    """A sample of named values. ``values`` keys carry their unit (``battery_power_w``)."""

    ts: AwareDatetime
    seq: int = Field(ge=0, description="monotonic per device across restarts of the bridge")
    values: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], float]

    @model_validator(mode="after")
    def _finite(self) -> Telemetry:
        if not all(map(math.isfinite, self.values.values())):  # one C call per value on the hot path
            bad = next(name for name, value in self.values.items() if not math.isfinite(value))
            raise ValueError(f"value {bad} is not finite")
        if not self.values:
            raise ValueError("values must not be empty")
        return self


class DeviceStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DEGRADED = "degraded"


class State(_Payload):
    """Retained presence; the last will publishes ``status=offline``."""

    status: DeviceStatus
    ts: AwareDatetime
    firmware: str | None = None
    profile: str | None = None


class EventSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EdgeEvent(_Payload):
    """Faults, alarms and fail-safe activations, with codes from the register map."""

    ts: AwareDatetime
    code: str = Field(min_length=1, max_length=64, description="e.g. F13, failsafe.activated, outbox.dropped")
    severity: EventSeverity
    message: str = Field(max_length=500)
    details: dict[str, Any] = Field(default_factory=dict)


class CommandType(StrEnum):
    SET_MODE = "set_mode"
    SET_POWER = "set_power"
    SET_SCHEDULE = "set_schedule"
    SET_LIMITS = "set_limits"
    EMERGENCY_STOP = "emergency_stop"
    REFRESH = "refresh"


class BatteryMode(StrEnum):
    SELF_CONSUMPTION = "self_consumption"  # the safe program
    CHARGE = "charge"
    DISCHARGE = "discharge"
    HOLD = "hold"  # neither charge nor discharge the battery


class SetModeParams(_Payload):
    mode: BatteryMode


class SetPowerParams(_Payload):
    """Battery power set-point; + discharge, - charge (ARCHITECTURE §3)."""

    battery_power_w: float = Field(ge=-1_000_000, le=1_000_000)


class ScheduleSlot(_Payload):
    start: AwareDatetime
    end: AwareDatetime
    mode: BatteryMode
    battery_power_w: float = Field(default=0.0, ge=-1_000_000, le=1_000_000)
    target_soc_pct: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleSlot:
        if self.end <= self.start:
            raise ValueError("slot end must be after its start")
        return self


class SetScheduleParams(_Payload):
    slots: list[ScheduleSlot] = Field(min_length=1, max_length=672)
    valid_until: AwareDatetime

    @model_validator(mode="after")
    def _no_overlap(self) -> SetScheduleParams:
        ordered = sorted(self.slots, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end:
                raise ValueError(f"slots overlap at {after.start.isoformat()}")
        return self


class SafetyLimits(_Payload):
    """A site's safety envelope. The bridge never drives the inverter outside it."""

    soc_min_pct: float = Field(ge=0, le=100)
    soc_max_pct: float = Field(ge=0, le=100)
    # Bounded like a set-point (1 MW): an unbounded float let Infinity through to the jsonb column.
    max_charge_w: float = Field(ge=0, le=1_000_000)
    max_discharge_w: float = Field(ge=0, le=1_000_000)
    battery_temp_min_c: float = Field(ge=-40, le=80)
    battery_temp_max_c: float = Field(ge=-40, le=80)
    export_limit_w: float = Field(ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> SafetyLimits:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        if self.battery_temp_min_c >= self.battery_temp_max_c:
            raise ValueError("battery_temp_min_c must be below battery_temp_max_c")
        return self


class SetLimitsParams(_Payload):
    limits: SafetyLimits


class EmptyParams(_Payload):
    pass


COMMAND_PARAMS: dict[CommandType, type[_Payload]] = {
    CommandType.SET_MODE: SetModeParams,
    CommandType.SET_POWER: SetPowerParams,
    CommandType.SET_SCHEDULE: SetScheduleParams,
    CommandType.SET_LIMITS: SetLimitsParams,
    CommandType.EMERGENCY_STOP: EmptyParams,
    CommandType.REFRESH: EmptyParams,
}


class Command(_Payload):
    """Cloud → edge. Idempotent by ``id``; past ``expires_at`` it is answered ``expired``, never run."""

    id: uuid.UUID
    type: CommandType
    params: dict[str, Any] = Field(default_factory=dict)
    issued_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _check(self) -> Command:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        COMMAND_PARAMS[self.type].model_validate(self.params)
        return self

    def typed_params(self) -> _Payload:
        return COMMAND_PARAMS[self.type].model_validate(self.params)

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class AckStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


class CommandAck(_Payload):
    id: uuid.UUID
    status: AckStatus
    reason: str | None = Field(default=None, max_length=500)
    applied: dict[str, Any] = Field(default_factory=dict)
    ts: AwareDatetime


PAYLOAD_BY_SUFFIX: dict[TopicSuffix, type[_Payload]] = {
    TopicSuffix.TELEMETRY: Telemetry,
    TopicSuffix.STATE: State,
    TopicSuffix.EVENT: EdgeEvent,
    TopicSuffix.COMMAND: Command,
    TopicSuffix.COMMAND_ACK: CommandAck,
}

__all__ = [
    "COMMAND_PARAMS",
    "PAYLOAD_BY_SUFFIX",
    "SLUG_PATTERN",
    "TOPIC_PREFIX",
    "AckStatus",
    "BatteryMode",
    "Command",
    "CommandAck",
    "CommandType",
    "DeviceStatus",
    "EdgeEvent",
    "EmptyParams",
    "EventSeverity",
    "ParsedTopic",
    "SafetyLimits",
    "ScheduleSlot",
    "SetLimitsParams",
    "SetModeParams",
    "SetPowerParams",
    "SetScheduleParams",
    "Slug",
    "State",
    "Telemetry",
    "TopicSuffix",
    "parse_topic",
    "topic",
]
