"""Request types that reject what the services cannot store or compute with, at the boundary (422
naming the field) instead of in PostgreSQL or the optimiser (500).

- PostgreSQL ``text`` cannot hold the NUL character: every free-text request field is :data:`Text`.
- JSON numbers may be huge (``1e308``) and Python's JSON parser accepts ``NaN``/``Infinity``: request
  floats are finite and bounded (:data:`Finite`, or a domain bound such as :data:`PricePerKwh`).
- PostgreSQL ``bigint`` ends at 2**63-1 (``OFFSET`` is a bigint): :data:`Offset` and :data:`PgInt`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field

# In the OpenAPI document too, so that clients (and the schema fuzzer) know.
NUL_FREE_PATTERN = r"^[^\x00]*$"

PG_INT_MAX = 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1

# Any physical or monetary quantity the platform handles is far below this; the bound keeps sums and
# products of a few thousand values finite in float64.
FINITE_LIMIT = 1e12

Text = Annotated[str, Field(pattern=NUL_FREE_PATTERN)]
"""Free text stored in PostgreSQL: no NUL character."""

Finite = Annotated[float, Field(allow_inf_nan=False, ge=-FINITE_LIMIT, le=FINITE_LIMIT)]
"""A float the code can compute with: no NaN or infinity, |x| <= 1e12."""

PricePerKwh = Annotated[float, Field(allow_inf_nan=False, ge=-1e5, le=1e5)]
"""A price in minor units (pence, cents) per kWh: |p| <= 100,000 (1,000 £/kWh, far above any market cap)."""

Offset = Annotated[int, Field(ge=0, le=PG_BIGINT_MAX)]
"""A list offset: PostgreSQL's OFFSET is a bigint."""

PgInt = Annotated[int, Field(ge=-PG_INT_MAX - 1, le=PG_INT_MAX)]
"""An integer stored in a PostgreSQL ``integer`` column."""


def _iso_only(value: object) -> object:
    # pydantic's lax mode reads a number (or "0.0") as Unix seconds; the OpenAPI document says
    # date-time, so a number is a schema violation and must be refused, not silently read as 1970.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("give an ISO 8601 date-time with a time zone, e.g. 2026-01-01T00:00Z")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("give an ISO 8601 date-time with a time zone, e.g. 2026-01-01T00:00Z")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
IsoDatetimeAny = Annotated[datetime, BeforeValidator(_iso_only)]  # time zone optional (naive = UTC)
"""An aware date-time given as ISO 8601 text (a bare number is refused, as the schema says)."""
