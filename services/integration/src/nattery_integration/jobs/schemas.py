"""API shapes of the job table (``GET /jobs``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class JobView(BaseModel):
    name: str
    provider: str | None
    registered: bool  # this replica knows the job (a row left by a removed job says False)
    running: bool
    leased_by: str | None
    next_run_at: datetime
    scheduled_for: datetime
    attempt: int
    runs: int
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_outcome: str | None
    last_message: str | None
    last_error: str | None
    last_success_at: datetime | None
