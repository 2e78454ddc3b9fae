"""Markets REST API (thin): the price sets this service has published (public market data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from nattery_integration.deps import get_ctx
from nattery_integration.markets.repository import MarketsRepository
from nattery_integration.markets.schemas import PriceOut, PriceSetOut
from nattery_shared.auth import Viewer
from nattery_shared.errors import BadRequest
from nattery_shared.validation import IsoDatetimeAny, Text

router = APIRouter(tags=["markets"])

MAX_SPAN = timedelta(days=31)


@router.get("/markets/prices", response_model=list[PriceSetOut])
async def price_sets(
    request: Request,
    _: Viewer,
    market: Annotated[Text, Query(min_length=1, max_length=64, examples=["octopus-agile"])],
    region: Annotated[Text, Query(max_length=32, description="GSP letter or bidding-zone EIC")] = "",
    direction: Literal["import", "export"] = "import",
    start: IsoDatetimeAny | None = None,  # (schema fuzzer: a bare number was read as Unix time)
    end: IsoDatetimeAny | None = None,
) -> list[PriceSetOut]:
    """The latest version of each delivery window overlapping [start, end) (default: today and
    tomorrow), as published in ``market.prices_updated``."""
    now = datetime.now(UTC)
    start = start or now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = end or start + timedelta(days=2)
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRequest("start, end: give a time zone (e.g. 2026-01-01T00:00Z)", details={"field": "start"})
    if not start < end <= start + MAX_SPAN:
        raise BadRequest("end: after start and at most 31 days later", details={"field": "end"})
    rows = await MarketsRepository(get_ctx(request).pool).latest_sets(market, region, direction, start, end)
    return [
        PriceSetOut(
            **{k: r[k] for k in PriceSetOut.model_fields if k != "prices"},
            prices=[
                PriceOut(start=p[0], end=p[1], price_minor_per_kwh=p[2], price=p[3]) for p in r["prices"]
            ],
        )
        for r in rows
    ]
