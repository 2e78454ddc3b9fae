"""GB system prices and Net Imbalance Volume per settlement period (pure request/parse code).

- Elexon Insights (providers-2.md §2): ``GET /balancing/settlement/system-prices/{yyyy-MM-dd}?format=json``,
  public, ``data[]`` with ``settlementPeriod``, ``startTime`` (UTC, the key: SPs are local, 46/50 on
  clock-change days), ``systemSellPrice``/``systemBuyPrice`` (£/MWh), ``netImbalanceVolume`` (MWh).
- Modo (providers.md §3, partial): ``GET /gb/modo/markets/niv-live?date_from&date_to`` with header
  ``X-Token``, ``results[]`` of ``{date, settlement_period, niv}``; no prices, no start time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nattery_integration.markets.prices import LONDON, raise_for_status
from nattery_integration.providers.errors import ProviderDataInvalid, ProviderRejected


@dataclass(frozen=True)
class NivPoint:
    settlement_date: date
    settlement_period: int
    start: datetime | None
    niv_mwh: float
    system_sell_price_gbp_per_mwh: float | None = None
    system_buy_price_gbp_per_mwh: float | None = None


class ElexonRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    settlementDate: date
    settlementPeriod: int = Field(ge=1, le=50)
    startTime: datetime
    systemSellPrice: float | None = None
    systemBuyPrice: float | None = None
    netImbalanceVolume: float | None = None


class ElexonAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: list[ElexonRow]


class ModoRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    date: date
    settlement_period: int = Field(ge=1, le=50)
    niv: float


class ModoAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    results: list[ModoRow]


def _load(provider: str, body: bytes, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, ValidationError) as e:
        raise ProviderDataInvalid(
            provider, f"the answer is not the expected JSON: {str(e)[:300]}", excerpt=body
        ) from e


def settlement_periods(day: date) -> int:
    """46, 48 or 50: the local day's length in half-hours."""
    start = datetime.combine(day, time(0), LONDON)
    end = datetime.combine(day + timedelta(days=1), time(0), LONDON)
    return int((end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=30))


def parse_elexon(body: bytes) -> list[NivPoint]:
    answer: ElexonAnswer = _load("elexon", body, ElexonAnswer)
    out = []
    for r in answer.data:
        if r.netImbalanceVolume is None:
            continue  # not settled yet
        if r.startTime.tzinfo is None:
            raise ProviderDataInvalid("elexon", "startTime without a zone")
        out.append(
            NivPoint(
                r.settlementDate,
                r.settlementPeriod,
                r.startTime.astimezone(UTC),
                r.netImbalanceVolume,
                r.systemSellPrice,
                r.systemBuyPrice,
            )
        )
    return sorted(out, key=lambda p: p.settlement_period)


def parse_modo(body: bytes) -> list[NivPoint]:
    answer: ModoAnswer = _load("modo", body, ModoAnswer)
    latest: dict[tuple[date, int], NivPoint] = {}
    for r in answer.results:
        latest.setdefault((r.date, r.settlement_period), NivPoint(r.date, r.settlement_period, None, r.niv))
    return [latest[k] for k in sorted(latest)]


async def fetch_elexon(client: httpx.AsyncClient, day: date) -> list[NivPoint]:
    response = await client.get(
        f"/balancing/settlement/system-prices/{day.isoformat()}",
        params={"format": "json"},
        extensions={"endpoint": "system-prices"},
    )
    raise_for_status(response, "elexon")
    return parse_elexon(response.content)


async def fetch_modo(client: httpx.AsyncClient, token: str, day: date) -> list[NivPoint]:
    if not token:
        raise ProviderRejected(
            "modo", 401, b"the connection has no API key (X-Token): add it to the connection"
        )
    response = await client.get(
        "/gb/modo/markets/niv-live",
        params={"date_from": day.isoformat(), "date_to": day.isoformat()},
        headers={"X-Token": token},
        extensions={"endpoint": "niv-live"},
    )
    raise_for_status(response, "modo")
    return parse_modo(response.content)
