"""API shapes of connections. Secrets go in, never come out (``secrets`` in answers is a mask)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SECRET_MASK = "********"


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$", description="a provider of GET /providers")
    name: str = Field(min_length=1, max_length=100)
    settings: dict[str, Any] = Field(default_factory=dict, description="the provider's settings schema")
    secrets: dict[str, str] = Field(default_factory=dict, description="API keys/tokens; stored encrypted")
    enabled: bool = True


class ConnectionUpdate(BaseModel):
    """Only what is given changes. ``settings`` replaces the settings as a whole; ``secrets`` changes the
    named secrets only (``null`` removes an optional one)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    settings: dict[str, Any] | None = None
    secrets: dict[str, str | None] | None = None
    enabled: bool | None = None


class Connection(BaseModel):
    id: uuid.UUID
    provider: str
    name: str
    settings: dict[str, Any]
    secrets: dict[str, str] = Field(description=f"names of the secrets set, each shown as {SECRET_MASK!r}")
    enabled: bool
    last_test_at: datetime | None
    last_test_ok: bool | None
    created_at: datetime
    updated_at: datetime


class TestCheck(BaseModel):
    __test__ = False
    name: str
    ok: bool
    detail: str  # what worked, or what did not and what to do about it


class ConnectionTestResult(BaseModel):
    __test__ = False
    connection_id: uuid.UUID
    provider: str
    ok: bool
    checks: list[TestCheck]
    tested_at: datetime


class ConnectionSecrets(BaseModel):
    """A connection with its secrets decrypted: for connectors inside the service, never an API answer."""

    id: uuid.UUID
    org_id: uuid.UUID
    provider: str
    name: str
    settings: dict[str, Any]
    secrets: dict[str, str]
