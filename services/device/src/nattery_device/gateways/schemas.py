"""Gateway API models: the admin's gateway keys, and the batch a gateway posts to ``POST /ingest``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from nattery_shared.validation import Finite, PgInt, Text

# How far ahead of the server's clock a reading's timestamp may be (gateway clocks drift a little).
MAX_FUTURE_S = 300
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
MAX_READINGS = 1000
MAX_FIELDS = 64

FieldName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayCreate(_In):
    name: Text = Field(min_length=1, max_length=200)
    site_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=100, description="sites the key may write to; empty: every site"
    )
    allowed_cidrs: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=50,
        description="client addresses the key is accepted from (CIDR); empty: any address",
        examples=[["198.51.100.0/24"]],
    )


class GatewayRotate(_In):
    overlap_s: int = Field(
        default=0, ge=0, le=86_400, description="how long the old key keeps working (0: it stops at once)"
    )


class Gateway(BaseModel):
    id: uuid.UUID
    name: str
    site_ids: list[uuid.UUID]
    allowed_cidrs: list[str]
    key_hint: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    previous_key_valid_until: datetime | None


class GatewayWithKey(Gateway):
    api_key: str = Field(description="shown once: only its hash is stored")


class Reading(_In):
    device_id: uuid.UUID
    ts: AwareDatetime
    seq: PgInt = Field(default=0, ge=0, description="the gateway's own counter, if it keeps one")
    values: dict[FieldName, Finite] = Field(min_length=1, max_length=MAX_FIELDS)

    @field_validator("ts")
    @classmethod
    def _plausible(cls, ts: datetime) -> datetime:
        if ts < EARLIEST_TS:
            raise ValueError("timestamp before 2000-01-01")
        if ts > datetime.now(UTC) + timedelta(seconds=MAX_FUTURE_S):
            raise ValueError(f"timestamp more than {MAX_FUTURE_S} s in the future")
        return ts


class IngestBatch(_In):
    """One post of a gateway. Accepted or rejected as a whole: one invalid reading refuses the batch."""

    batch_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="unique per gateway; a batch id already stored is acknowledged and not stored again",
    )
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS)


class IngestResult(BaseModel):
    batch_id: str
    stored: int = Field(description="readings stored by this request (0 for a replayed batch)")
    duplicate: bool = Field(description="the batch id had been stored already")
