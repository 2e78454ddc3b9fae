"""Command API models. Parameters are validated against the MQTT contract (``COMMAND_PARAMS``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from nattery_contracts.events import CommandState
from nattery_contracts.mqtt import COMMAND_PARAMS, AckStatus, CommandType


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: CommandType
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"battery_power_w": -2500}])
    expires_at: AwareDatetime | None = Field(
        default=None, description="default: now + the service's command TTL"
    )
    ttl_s: int | None = Field(default=None, ge=5, le=7 * 24 * 3600, description="alternative to expires_at")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.expires_at is not None and self.ttl_s is not None:
            raise ValueError("give expires_at or ttl_s, not both")
        COMMAND_PARAMS[self.type].model_validate(self.params)  # raises with the exact field errors
        return self


class Transition(BaseModel):
    state: CommandState
    edge_status: AckStatus | None
    reason: str | None
    at: datetime


class CommandOut(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    type: CommandType
    params: dict[str, Any]
    state: CommandState
    edge_status: AckStatus | None
    reason: str | None
    applied: dict[str, Any]
    source: str
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    updated_at: datetime
    transitions: list[Transition] = Field(default_factory=list)
