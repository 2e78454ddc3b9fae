"""InfluxDB through the v1 HTTP API only (``/write`` line protocol, ``/query`` InfluxQL).

That subset is served by InfluxDB 1.x, 2.x (v1 compatibility) and 3.x, so the same code runs against
Debian's 1.6 locally and a managed InfluxDB in production. Writes are gzip-compressed batches retried
with back-off; queries come back as typed rows. Fields are always written as floats so that a replayed
point never conflicts with the shard's field type.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from nattery_shared.settings import InfluxSettings

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


class InfluxError(Exception):
    """A request InfluxDB refused (4xx): retrying will not help."""


class InfluxUnavailable(Exception):
    """InfluxDB did not answer or answered 5xx: worth retrying."""


# --- line protocol ------------------------------------------------------------------------------
def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_measurement(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace(" ", r"\ ")


def line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float],
    ts: datetime,
) -> str:
    """One line of line protocol, nanosecond timestamp, tags sorted by key (InfluxDB's advice)."""
    tag_part = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
    field_part = ",".join(f"{_escape_key(k)}={float(v)!r}" for k, v in fields.items() if math.isfinite(v))
    if not field_part:
        raise ValueError("a point needs at least one finite field")
    # Integer maths: a float timestamp can land a microsecond early, and then a replayed point
    # would not overwrite its first copy.
    ts_ns = ((ts - _EPOCH) // _ONE_MICROSECOND) * 1000
    return f"{_escape_measurement(measurement)}{tag_part} {field_part} {ts_ns}"


# --- typed query results ------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _parse_results(payload: dict[str, Any]) -> list[list[Series]]:
    """One list of series per statement; ``time`` becomes an aware datetime."""
    out: list[list[Series]] = []
    for result in payload.get("results", []):
        if "error" in result:
            raise InfluxError(result["error"])
        statement: list[Series] = []
        for raw in result.get("series", []):
            columns: list[str] = raw["columns"]
            rows = []
            for values in raw.get("values", []):
                row = dict(zip(columns, values, strict=True))
                if isinstance(row.get("time"), int):
                    row["time"] = datetime.fromtimestamp(row["time"] / 1000, tz=UTC)
                rows.append(row)
            statement.append(Series(raw["name"], raw.get("tags", {}) or {}, columns, rows))
        out.append(statement)
    return out


@dataclass(frozen=True, slots=True)
class RawSeries:
    """A series as InfluxDB sent it: ``values`` are rows in ``columns`` order, ``time`` in epoch ms.
    For large results (no dict and datetime per row, see :meth:`InfluxClient.query_raw`)."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


def _raw_results(payload: dict[str, Any]) -> list[list[RawSeries]]:
    out: list[list[RawSeries]] = []
    for result in payload.get("results", []):
        if "error" in result:
            raise InfluxError(result["error"])
        out.append(
            [
                RawSeries(raw["name"], raw.get("tags", {}) or {}, raw["columns"], raw.get("values", []))
                for raw in result.get("series", [])
            ]
        )
    return out


def _retryable(err: BaseException) -> bool:
    return isinstance(err, InfluxUnavailable)


class InfluxClient:
    def __init__(self, settings: InfluxSettings, *, database: str | None = None) -> None:
        self._settings = settings
        self.database = database or settings.database
        auth = None
        if settings.username and settings.password is not None:
            auth = (settings.username, settings.password.get_secret_value())
        self._http = httpx.AsyncClient(base_url=settings.url, timeout=settings.timeout_s, auth=auth)

    async def close(self) -> None:
        await self._http.aclose()

    async def ping(self) -> None:
        try:
            response = await self._http.get("/ping", timeout=2.0)
        except httpx.HTTPError as err:
            raise InfluxUnavailable(str(err)) from err
        if response.status_code != 204:
            raise InfluxUnavailable(f"/ping answered {response.status_code}")

    async def write_lines(self, lines: Sequence[str], *, retry_for_s: float = 60.0) -> None:
        """Write a batch (gzip); retry with exponential back-off while InfluxDB is unavailable.

        Raises InfluxUnavailable after ``retry_for_s`` and InfluxError at once for a rejected batch.
        """
        if not lines:
            return
        body = gzip.compress(("\n".join(lines)).encode(), compresslevel=1)
        params = {"db": self.database, "precision": "ns"}
        if self._settings.retention_policy:
            params["rp"] = self._settings.retention_policy
        failing = False
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(retry_for_s),
            reraise=True,
        ):
            with attempt:
                try:
                    response = await self._http.post(
                        "/write", params=params, content=body, headers={"Content-Encoding": "gzip"}
                    )
                except httpx.TransportError as err:
                    if not failing:
                        log.warning("influxdb write failed, retrying: %s", err)
                        failing = True
                    raise InfluxUnavailable(str(err)) from err
                if response.status_code >= 500:
                    raise InfluxUnavailable(f"write answered {response.status_code}: {response.text[:200]}")
                if response.status_code != 204:
                    raise InfluxError(f"write answered {response.status_code}: {response.text[:500]}")
        if failing:
            log.info("influxdb write succeeded after retries")

    async def query(self, q: str, *, params: Mapping[str, Any] | None = None) -> list[Series]:
        """Run one InfluxQL statement (SELECT/SHOW) and return its series.

        ``params`` are bound server-side (``$name`` in the query), never interpolated.
        """
        return (await self.query_many(q, params=params))[0] if q else []

    async def query_many(self, q: str, *, params: Mapping[str, Any] | None = None) -> list[list[Series]]:
        results = _parse_results(await self._get_query(q, params))
        return results or [[]]

    async def query_raw(self, q: str, *, params: Mapping[str, Any] | None = None) -> list[RawSeries]:
        """Like :meth:`query` (one statement), rows left as lists and ``time`` as epoch ms: about half
        the Python work for thousands of rows (a day of one-minute history)."""
        results = _raw_results(await self._get_query(q, params))
        return results[0] if results else []

    async def _get_query(self, q: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        data: dict[str, str] = {"db": self.database, "q": q, "epoch": "ms"}
        if params:
            data["params"] = json.dumps(dict(params))
        try:
            response = await self._http.get("/query", params=data)
        except httpx.TransportError as err:
            raise InfluxUnavailable(str(err)) from err
        if response.status_code >= 500:
            raise InfluxUnavailable(f"query answered {response.status_code}")
        if response.status_code != 200:
            raise InfluxError(f"query answered {response.status_code}: {response.text[:500]}")
        payload: dict[str, Any] = response.json()
        return payload

    async def admin(self, q: str) -> None:
        """CREATE DATABASE / RETENTION POLICY etc. (POST /query; v1 servers only)."""
        response = await self._http.post("/query", params={"q": q})
        if response.status_code != 200:
            raise InfluxError(f"admin query answered {response.status_code}: {response.text[:500]}")
        _parse_results(response.json())


def lines_for(points: Iterable[tuple[str, Mapping[str, str], Mapping[str, float], datetime]]) -> list[str]:
    return [line(m, t, f, ts) for m, t, f, ts in points]
