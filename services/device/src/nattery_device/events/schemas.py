"""Edge event API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from nattery_contracts.mqtt import EventSeverity


class EdgeEventOut(BaseModel):
    """One event as the edge published it (``ts``, ``code``, ``severity``, ``message``, ``details``)
    and when device-service stored it."""

    id: int
    site_id: uuid.UUID
    device_id: uuid.UUID
    ts: datetime
    code: str
    severity: EventSeverity
    message: str
    details: dict[str, Any]
    received_at: datetime
