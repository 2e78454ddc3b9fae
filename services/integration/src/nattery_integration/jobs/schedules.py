"""``next_run`` functions for ``JobSpec``: each takes an aware datetime and returns the next run strictly
after it (aware, UTC)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def every(interval: timedelta, *, offset: timedelta = timedelta(0)) -> Callable[[datetime], datetime]:
    """Runs on the boundaries of ``interval`` since the Unix epoch, shifted by ``offset``:
    ``every(timedelta(minutes=30), offset=timedelta(minutes=2))`` runs at :02 and :32."""
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")

    def next_run(after: datetime) -> datetime:
        since = after.astimezone(UTC) - EPOCH - offset
        slots = since // interval + 1
        return EPOCH + offset + slots * interval

    return next_run


def daily_at(at: time, tz: str = "UTC") -> Callable[[datetime], datetime]:
    """Once a day at local wall-clock time ``at`` in ``tz`` (DST handled by zoneinfo)."""
    zone = ZoneInfo(tz)

    def next_run(after: datetime) -> datetime:
        local = after.astimezone(zone)
        candidate = datetime.combine(local.date(), at, tzinfo=zone)
        while candidate.astimezone(UTC) <= after.astimezone(UTC):
            candidate = datetime.combine(candidate.date() + timedelta(days=1), at, tzinfo=zone)
        return candidate.astimezone(UTC)

    return next_run
