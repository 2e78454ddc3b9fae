"""One price set: what every price connector returns, whatever its provider's shape (pure).

A set covers one delivery window completely (every slot from ``start`` to ``end``, no gaps, no overlaps)
or it is not a set: ``complete_set`` refuses anything else, so a partial day is never stored or
published. Prices are per kWh in the minor unit of the currency (pence, cents); ``native`` keeps the
provider's own figure in ``unit`` (e.g. EUR/MWh) for the record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from datetime import date as date_type
from zoneinfo import ZoneInfo

import httpx

from nattery_integration.providers.errors import ProviderRejected, ProviderUnavailable

LONDON = ZoneInfo("Europe/London")


class IncompletePrices(Exception):
    """The provider has not published the whole window yet (a day not yet published): retry later."""


@dataclass(frozen=True)
class Price:
    start: datetime
    end: datetime
    minor_per_kwh: float
    native: float


@dataclass(frozen=True)
class PriceSet:
    market: str
    region: str
    direction: str  # import | export
    currency: str  # ISO 4217
    unit: str  # unit of ``native``, e.g. p/kWh, EUR/MWh
    start: datetime
    end: datetime
    prices: tuple[Price, ...]

    def digest(self) -> str:
        """Same prices (times and values to 1e-6), same digest: the idempotency key of a version."""
        body = [[p.start.isoformat(), p.end.isoformat(), round(p.minor_per_kwh, 6)] for p in self.prices]
        raw = json.dumps([self.currency, self.unit, body], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


def complete_set(
    *,
    market: str,
    region: str,
    direction: str,
    currency: str,
    unit: str,
    start: datetime,
    end: datetime,
    prices: list[Price],
) -> PriceSet:
    """The prices inside [start, end) as a set, or IncompletePrices if any part of it is missing."""
    inside = sorted((p for p in prices if p.start >= start and p.end <= end), key=lambda p: p.start)
    cursor = start
    for p in inside:
        if p.start != cursor:
            break
        cursor = p.end
    if cursor != end:
        have = f"up to {cursor.isoformat()}" if cursor > start else "nothing"
        raise IncompletePrices(
            f"{market} {region} {direction}: [{start.isoformat()}, {end.isoformat()}) not published yet "
            f"(contiguous prices from the start: {have})"
        )
    return PriceSet(market, region, direction, currency, unit, start, end, tuple(inside))


def slot_count(start: datetime, end: datetime, step: timedelta) -> int:
    return int((end - start) / step)


def london_day_window(day: date_type) -> tuple[datetime, datetime]:
    """Octopus Agile's delivery day ``day``: 23:00 UK local the evening before to 23:00 UK local on
    ``day`` (the window published around 16:00 UK on the day before), in UTC."""
    start = datetime.combine(day - timedelta(days=1), time(23, 0), LONDON)
    end = datetime.combine(day, time(23, 0), LONDON)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_day_window(day: date_type, tz: str) -> tuple[datetime, datetime]:
    """Midnight to midnight local in ``tz`` (ENTSO-E's delivery day), in UTC."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0, 0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0, 0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def raise_for_status(response: httpx.Response, provider: str) -> None:
    """A 4xx the provider will answer again (bad product, region, token) is ProviderRejected; 429 and
    5xx are ProviderUnavailable. The provider clients raise these already; this covers a plain client."""
    code = response.status_code
    if code < 400:
        return
    if code == 429 or code >= 500:
        raise ProviderUnavailable(provider, f"HTTP {code}")
    raise ProviderRejected(
        provider, code, response.content, url=str(response.request.url.copy_with(query=None))
    )
