"""Every query of the flows area: raw telemetry and its per-hour sample counts from InfluxDB (the device
service's measurement, tags ``org``, ``site``, ``device``), hourly rollups in PostgreSQL (schema
``analytics``).

InfluxQL text carries only validated UUIDs, field names from ``integrate.FIELDS``, a measurement name
checked against ``[a-z][a-z0-9_]*`` and integer nanosecond times. SQL text carries only the quantity
names of ``integrate.Quantity``; every value is a bound parameter.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import class_row

from nattery_analytics.flows.integrate import FIELDS, Quantity, Series
from nattery_shared.influx import InfluxClient

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
HOUR = timedelta(hours=1)
# One statement reads at most this much raw telemetry of one device (a day of 5-second points: 17,280 rows).
READ_CHUNK = timedelta(days=1)


def _ns(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _measurement(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"unexpected measurement name {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class DeviceKey:
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID


QUARTER = timedelta(minutes=15)


async def quarter_counts(
    influx: InfluxClient, measurement: str, start: datetime, end: datetime
) -> dict[DeviceKey, dict[datetime, int]]:
    """Per device and quarter-hour in ``[start, end)``: how many values of the flows' fields it holds.
    A change in a count is new (or late) data there."""
    cols = ", ".join(f'count("{f}") AS "{f}"' for f in FIELDS)
    q = (
        f"SELECT {cols} FROM {_measurement(measurement)} WHERE time >= {_ns(start)} AND time < {_ns(end)} "
        'GROUP BY time(15m), "org", "site", "device" fill(none)'
    )
    out: dict[DeviceKey, dict[datetime, int]] = {}
    for s in await influx.query_raw(q):
        try:
            key = DeviceKey(
                uuid.UUID(s.tags.get("org", "")),
                uuid.UUID(s.tags.get("site", "")),
                uuid.UUID(s.tags.get("device", "")),
            )
        except ValueError:
            continue  # a series tagged by hand or by an older writer: not a device we can name
        quarters = out.setdefault(key, {})
        for row in s.values:
            n = sum(int(v) for v in row[1:] if v)
            if n:
                quarter = _EPOCH + timedelta(milliseconds=row[0])
                quarters[quarter] = quarters.get(quarter, 0) + n
    return out


async def samples(
    influx: InfluxClient, measurement: str, key: DeviceKey, start: datetime, end: datetime
) -> dict[str, Series]:
    """Every value of the flows' fields of one device in ``[start, end)``, per field, time-ordered."""
    times: dict[str, list[float]] = defaultdict(list)
    values: dict[str, list[float]] = defaultdict(list)
    cols = ", ".join(f'"{f}"' for f in FIELDS)
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(chunk_start + READ_CHUNK, end)
        q = (
            f"SELECT {cols} FROM {_measurement(measurement)} WHERE \"org\" = '{key.org_id}' "
            f"AND \"site\" = '{key.site_id}' AND \"device\" = '{key.device_id}' "
            f"AND time >= {_ns(chunk_start)} AND time < {_ns(chunk_end)}"
        )
        for s in await influx.query_raw(q):
            index = [(i, c) for i, c in enumerate(s.columns) if c in FIELDS]
            for row in s.values:
                t = row[0] / 1000.0
                for i, c in index:
                    v = row[i]
                    if v is not None and not isinstance(v, bool | str):
                        times[c].append(t)
                        values[c].append(float(v))
        chunk_start = chunk_end
    return {f: Series(np.asarray(times[f]), np.asarray(values[f])) for f in times}


# --- PostgreSQL ------------------------------------------------------------------------------------

_Q = [q.value for q in Quantity]
_HOUR_COLUMNS = [c for q in _Q for c in (f"{q}_kwh", f"{q}_covered_s", f"{q}_source")]


@dataclass(frozen=True)
class HourRow:
    device_id: uuid.UUID
    hour: datetime
    org_id: uuid.UUID
    site_id: uuid.UUID
    sample_counts: list[int]
    values: dict[str, Any]  # {q}_kwh, {q}_covered_s, {q}_source per quantity


async def stored_counts(
    conn: AsyncConnection[Any], start: datetime, end: datetime
) -> dict[tuple[uuid.UUID, datetime], list[int]]:
    cur = await conn.execute(
        "SELECT device_id, hour, sample_counts FROM flow_hours WHERE hour >= %s AND hour < %s", (start, end)
    )
    return {(r["device_id"], r["hour"]): list(r["sample_counts"]) for r in await cur.fetchall()}


async def upsert_hours(conn: AsyncConnection[Any], rows: Sequence[HourRow]) -> None:
    cols = ["device_id", "hour", "org_id", "site_id", "sample_counts", *_HOUR_COLUMNS]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[2:])
    sql = (
        f"INSERT INTO flow_hours ({', '.join(cols)}, computed_at) "
        f"VALUES ({', '.join(['%s'] * len(cols))}, now()) "
        f"ON CONFLICT (device_id, hour) DO UPDATE SET {updates}, computed_at = now()"
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            sql,
            [
                (
                    r.device_id,
                    r.hour,
                    r.org_id,
                    r.site_id,
                    r.sample_counts,
                    *(r.values[c] for c in _HOUR_COLUMNS),
                )
                for r in rows
            ],
        )


async def upsert_device(
    conn: AsyncConnection[Any], key: DeviceKey, first_hour: datetime, checked_until: datetime
) -> None:
    await conn.execute(
        """INSERT INTO flow_devices (device_id, org_id, site_id, first_hour, checked_until)
           VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (device_id) DO UPDATE SET org_id = EXCLUDED.org_id, site_id = EXCLUDED.site_id,
             first_hour = least(flow_devices.first_hour, EXCLUDED.first_hour),
             checked_until = greatest(flow_devices.checked_until, EXCLUDED.checked_until)""",
        (key.device_id, key.org_id, key.site_id, first_hour, checked_until),
    )


async def mark_checked(conn: AsyncConnection[Any], until: datetime) -> None:
    """Every known device's hours before ``until`` have been looked at (no row there: no data)."""
    await conn.execute("UPDATE flow_devices SET checked_until = %s WHERE checked_until < %s", (until, until))


@dataclass(frozen=True)
class FlowDevice:
    device_id: uuid.UUID
    site_id: uuid.UUID
    first_hour: datetime
    checked_until: datetime


async def devices(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID | None
) -> list[FlowDevice]:
    async with conn.cursor(row_factory=class_row(FlowDevice)) as cur:
        if site_id is None:
            await cur.execute(
                "SELECT device_id, site_id, first_hour, checked_until FROM flow_devices WHERE org_id = %s "
                "ORDER BY site_id, device_id",
                (org_id,),
            )
        else:
            await cur.execute(
                "SELECT device_id, site_id, first_hour, checked_until FROM flow_devices "
                "WHERE org_id = %s AND site_id = %s ORDER BY device_id",
                (org_id, site_id),
            )
        return await cur.fetchall()


def _bucket_select() -> str:
    parts = []
    for q in _Q:
        parts += [
            f"sum({q}_kwh) AS {q}_kwh",
            f"sum({q}_covered_s) AS {q}_covered_s",
            f"CASE WHEN count(DISTINCT {q}_source) > 1 THEN 'mixed' ELSE max({q}_source) END AS {q}_source",
        ]
    return ", ".join(parts)


_BUCKETS = (
    "SELECT device_id, date_trunc(%s, hour, %s) AS bucket, "
    + _bucket_select()
    + " FROM flow_hours WHERE org_id = %s AND hour >= %s AND hour < %s {site} GROUP BY device_id, bucket"
)


async def buckets(
    conn: AsyncConnection[Any],
    org_id: uuid.UUID,
    site_id: uuid.UUID | None,
    *,
    unit: str,
    timezone: str,
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    """Hourly rows of ``[start, end)`` summed per device and ``unit`` (hour, day, month in ``timezone``)."""
    if unit not in ("hour", "day", "month"):
        raise ValueError(unit)
    params: list[Any] = [unit, timezone, org_id, start, end]
    site = ""
    if site_id is not None:
        site, params = "AND site_id = %s", [*params, site_id]
    cur = await conn.execute(_BUCKETS.format(site=site), params)
    rows: list[dict[str, Any]] = await cur.fetchall()
    return rows


async def try_lock(conn: AsyncConnection[Any], key: int) -> bool:
    """A session advisory lock: one replica computes the rollups at a time."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (key,))
    row: dict[str, Any] | None = await cur.fetchone()
    return bool(row and row["locked"])


async def unlock(conn: AsyncConnection[Any], key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
