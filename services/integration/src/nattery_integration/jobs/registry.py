"""What a scheduled job is, for the areas that register them.

An area exposes ``jobs(ctx) -> list[JobSpec]`` in its ``registration.py`` (see ``nattery_integration.areas``);
the runner (``jobs/service.py``) runs each spec on exactly one replica at a time:

    async def fetch_agile(job: JobContext) -> JobResult:
        rates = await connector.fetch(day=job.scheduled_for.date())
        if not rates:
            return JobResult.not_yet("tomorrow's Agile rates are not published yet", retry_in_s=600)
        await publish(rates)
        return JobResult.ok(f"{len(rates)} rates")

    JobSpec(name="octopus.agile", handler=fetch_agile, next_run=daily_at(time(16, 5), "Europe/London"),
            provider="octopus")

- ``next_run(after)`` gives the next regular run strictly after ``after`` (aware UTC datetimes in and
  out); ``schedules.py`` has ``every`` and ``daily_at``.
- A run missed while every replica was down runs once at start, then the schedule resumes from now
  (never once per missed slot). ``JobContext.scheduled_for`` says which slot a run stands for.
- ``JobResult.not_yet``: the data is not there yet; run again in ``retry_in_s`` (never later than the
  next regular run), up to ``max_attempts`` times. ``JobResult.failed`` (or an exception): retried with
  back-off (``failure_retry_s`` doubling, capped by the next regular run). Both are recorded
  (``GET /jobs``: last run, outcome, error, next run).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class JobOutcome(StrEnum):
    OK = "ok"
    NOT_YET = "not_yet"  # the data is not published yet: retry sooner than the next regular run
    FAILED = "failed"


@dataclass(frozen=True)
class JobResult:
    outcome: JobOutcome
    message: str = ""
    retry_in_s: float | None = None

    @classmethod
    def ok(cls, message: str = "") -> JobResult:
        return cls(JobOutcome.OK, message)

    @classmethod
    def not_yet(cls, message: str, *, retry_in_s: float | None = None) -> JobResult:
        return cls(JobOutcome.NOT_YET, message, retry_in_s)

    @classmethod
    def failed(cls, message: str, *, retry_in_s: float | None = None) -> JobResult:
        return cls(JobOutcome.FAILED, message, retry_in_s)


@dataclass(frozen=True)
class JobContext:
    name: str
    scheduled_for: datetime  # the regular slot this run stands for (in the past after downtime)
    started_at: datetime
    attempt: int  # 0 for the first run of a slot, then 1, 2, ... for its retries
    last_success_at: datetime | None
    replica: str


Handler = Callable[[JobContext], Awaitable[JobResult]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    handler: Handler
    next_run: Callable[[datetime], datetime]
    provider: str | None = None  # shown under GET /providers as this provider's next run
    run_at_start: bool = True  # a job never run before runs at once (else at its first regular slot)
    retry_in_s: float = 600.0  # default wait after ``not_yet``
    max_attempts: int = 48  # retries of one slot before it is recorded failed and left to the next
    failure_retry_s: float = 60.0  # first back-off after a failure, doubling per attempt
    timeout_s: float = 600.0  # a run longer than this is cancelled and recorded failed

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_.:-]{1,100}", self.name):
            raise ValueError(f"job name {self.name!r}: lowercase letters, digits, . _ : -")


class JobRegistry:
    def __init__(self, specs: Iterable[JobSpec] = ()) -> None:
        self._specs: dict[str, JobSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: JobSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"job {spec.name!r} registered twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> JobSpec | None:
        return self._specs.get(name)

    def specs(self) -> list[JobSpec]:
        return list(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)

    def for_provider(self, provider: str) -> list[JobSpec]:
        return [s for s in self._specs.values() if s.provider == provider]
