from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, Field

from nattery_shared.auth import Role
from nattery_shared.validation import Text


class ApiTokenCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    role: Role = Role.VIEWER
    expires_in_days: int = Field(default=90, ge=1, le=365)


class ApiTokenOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    role: Role
    prefix: str
    created_at: AwareDatetime
    expires_at: AwareDatetime
    revoked_at: AwareDatetime | None
    last_used_at: AwareDatetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="shown once; exchange it at POST /auth/token")
