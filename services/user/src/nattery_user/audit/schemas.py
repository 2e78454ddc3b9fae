from __future__ import annotations

import uuid
from typing import Any

from pydantic import AwareDatetime, BaseModel


class AuditEntry(BaseModel):
    id: int
    org_id: uuid.UUID | None
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    source: str
    at: AwareDatetime


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before_id: int | None = None
