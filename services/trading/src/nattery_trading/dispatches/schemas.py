"""API models of emergency stops."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from nattery_shared.validation import Text


class EmergencyStopIn(BaseModel):
    site_id: uuid.UUID | None = Field(default=None, description="omit to stop every site of the org")
    reason: Text = Field(min_length=1, max_length=500)


class EmergencyStopOut(BaseModel):
    stop_id: uuid.UUID
    site_id: uuid.UUID | None
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None
