"""Octopus Energy unit rates (public products API; providers.md §1): pure request/parse code.

``GET /products/{product}/electricity-tariffs/E-1R-{product}-{region}/standard-unit-rates/`` answers
p/kWh rates newest first, paginated by following ``next``. Agile import and Agile Outgoing export use
the same envelope; only the product code differs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from nattery_integration.markets.prices import LONDON, Price, raise_for_status
from nattery_integration.providers.errors import ProviderDataInvalid

PROVIDER = "octopus"
GSP_REGIONS = frozenset("ABCDEFGHJKLMNP")
PRODUCT_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,63}$")
MAX_PAGES = 50  # a day is 46-50 rates; a month at page_size 100 is 15 pages: more is a loop


class Rate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    value_exc_vat: float | None = None
    value_inc_vat: float
    valid_from: datetime
    valid_to: datetime | None = None  # null on open-ended (non-Agile) rates
    payment_method: str | None = None


class Page(BaseModel):
    model_config = ConfigDict(extra="ignore")

    count: int | None = None
    next: str | None = None
    previous: str | None = None
    results: list[Rate]


def tariff_code(product: str, region: str) -> str:
    """``E-1R-{PRODUCT}-{GSP letter}`` (single-register electricity)."""
    return f"E-1R-{product}-{region}"


def validate_product_region(product: str, region: str) -> None:
    if not PRODUCT_RE.match(product):
        raise ValueError(f"product code {product!r}: capitals, digits and '-' (e.g. AGILE-24-10-01)")
    if region not in GSP_REGIONS:
        raise ValueError(f"region {region!r}: one GSP letter of {''.join(sorted(GSP_REGIONS))}")


def rates_path(product: str, region: str) -> str:
    return f"/products/{product}/electricity-tariffs/{tariff_code(product, region)}/standard-unit-rates/"


def _aware(t: datetime) -> datetime:
    # Datetimes without a zone are Europe/London (Octopus docs).
    return (t if t.tzinfo is not None else t.replace(tzinfo=LONDON)).astimezone(UTC)


def parse_page(body: bytes) -> Page:
    try:
        return Page.model_validate(json.loads(body))
    except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
        raise ProviderDataInvalid(PROVIDER, f"unit rates are not the expected JSON: {str(e)[:300]}") from e


def rates_to_prices(rates: list[Rate], payment_method: str | None = None) -> list[Price]:
    """Half-hourly prices (inc. VAT), oldest first; a rate for another payment method is skipped."""
    out: dict[datetime, Price] = {}
    for r in rates:
        if r.valid_to is None:
            raise ProviderDataInvalid(
                PROVIDER, "a unit rate without valid_to is not a half-hourly (Agile) rate"
            )
        if r.payment_method not in (None, payment_method):
            continue
        start, end = _aware(r.valid_from), _aware(r.valid_to)
        if end <= start:
            raise ProviderDataInvalid(PROVIDER, f"rate from {start.isoformat()} ends before it starts")
        out[start] = Price(start, end, float(r.value_inc_vat), float(r.value_inc_vat))
    return [out[k] for k in sorted(out)]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


async def fetch_unit_rates(
    client: httpx.AsyncClient,
    product: str,
    region: str,
    period_from: datetime,
    period_to: datetime,
    *,
    page_size: int = 1500,
) -> list[Price]:
    """Every rate in [period_from, period_to), following ``next`` to the last page."""
    validate_product_region(product, region)
    url: str | None = rates_path(product, region)
    params: dict[str, Any] | None = {
        "period_from": _iso(period_from),
        "period_to": _iso(period_to),
        "page_size": page_size,
    }
    rates: list[Rate] = []
    for _ in range(MAX_PAGES):
        if url is None:
            return rates_to_prices(rates)
        response = await client.get(url, params=params, extensions={"endpoint": "standard-unit-rates"})
        raise_for_status(response, PROVIDER)
        page = parse_page(response.content)
        rates.extend(page.results)
        url, params = page.next, None  # ``next`` carries the query
    raise ProviderDataInvalid(PROVIDER, f"more than {MAX_PAGES} pages of unit rates (a `next` loop?)")
