"""API shapes of provider health (``GET /providers``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ProviderStatus(BaseModel):
    name: str
    title: str
    base_url: str
    breaker_state: str  # closed | open | half_open, as last changed by any replica
    breaker_changed_at: datetime | None
    breaker_replica: str | None
    last_success_at: datetime | None
    last_success_endpoint: str | None
    last_error_at: datetime | None
    last_error_endpoint: str | None
    last_error: str | None
    next_run_at: datetime | None  # the earliest next run of this provider's scheduled jobs
    jobs: list[str]
    rate_limit: str
