"""Every query of the telemetry area: the device (or a site's devices) a read is about, in the caller's
org (SQL, PostgreSQL), and the series themselves (InfluxQL, InfluxDB).

InfluxQL is text: identifiers in it are validated UUIDs (the org and device tags), field names match
``[a-z][a-z0-9_]*`` (the API's schemas), measurements come from ``MEASUREMENT`` and times are integer
nanoseconds; the org tag is always in the WHERE, so no statement reaches another org's series.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from nattery_device.ingest.lines import ts_ns
from nattery_shared.influx import InfluxClient, RawSeries, Series

Row = dict[str, Any]
TimeRange = tuple[datetime, datetime]


# --- PostgreSQL ------------------------------------------------------------------------------------
async def device(conn: AsyncConnection[Any], org_id: uuid.UUID, device_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        "SELECT id, org_id, site_id, kind FROM devices WHERE org_id = %s AND id = %s", (org_id, device_id)
    )
    row: Row | None = await cur.fetchone()
    return row


async def site_exists(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM sites WHERE org_id = %s AND id = %s", (org_id, site_id))
    return await cur.fetchone() is not None


async def devices(
    conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID | None, limit: int
) -> list[Row]:
    cur = await conn.execute(
        """SELECT id, site_id FROM devices WHERE org_id = %s AND (%s::uuid IS NULL OR site_id = %s)
           ORDER BY site_id, slug LIMIT %s""",
        (org_id, site_id, site_id, limit),
    )
    rows: list[Row] = await cur.fetchall()
    return rows


# --- InfluxDB: the raw points ----------------------------------------------------------------------
def _q(name: str) -> str:
    return f'"{name}"'


def _where(device: Row, start: datetime, end: datetime) -> str:
    """One device of one org (``device`` is a row of :func:`device`), ``start <= time < end``."""
    return (
        f"\"org\" = '{uuid.UUID(str(device['org_id']))}' AND \"device\" = '{uuid.UUID(str(device['id']))}' "
        f"AND time >= {ts_ns(start)} AND time < {ts_ns(end)}"
    )


async def points(
    influx: InfluxClient,
    measurement: str,
    device: Row,
    start: datetime,
    end: datetime,
    fields: Sequence[str] | None,
    limit: int,
) -> list[Series]:
    """The raw points of ``fields`` (all of them when None)."""
    select = ", ".join(_q(f) for f in fields) if fields else "*"
    return await influx.query(
        f'SELECT {select} FROM "{measurement}" WHERE {_where(device, start, end)} LIMIT {limit}'
    )


async def downsampled(
    influx: InfluxClient,
    measurement: str,
    device: Row,
    start: datetime,
    end: datetime,
    field_groups: Sequence[Sequence[str]],
    aggregate: str,
    interval: str,
    limit: int,
) -> list[list[RawSeries]]:
    """``aggregate`` of each field per ``interval`` bucket, one statement per group of fields run at
    once (InfluxDB 1.x runs one statement on one core); columns: time, then the fields in order."""
    statements = [
        f'SELECT {", ".join(f"{aggregate}({_q(f)}) AS {_q(f)}" for f in group)} FROM "{measurement}" '
        f"WHERE {_where(device, start, end)} GROUP BY time({interval}) fill(none) LIMIT {limit}"
        for group in field_groups
    ]
    return list(await asyncio.gather(*(influx.query_raw(q) for q in statements)))


async def field_stats(
    influx: InfluxClient, measurement: str, device: Row, start: datetime, end: datetime, fields: Sequence[str]
) -> list[Series]:
    """Per field ``{f}__mean``, ``__min``, ``__max``, ``__count``, and ``__wh`` (the time integral in
    W x h) for a power field (``*_w``); InfluxDB may put the integral on a row of its own."""
    parts = []
    for f in fields:
        parts += [
            f'mean("{f}") AS "{f}__mean"',
            f'min("{f}") AS "{f}__min"',
            f'max("{f}") AS "{f}__max"',
            f'count("{f}") AS "{f}__count"',
        ]
        if f.endswith("_w"):
            parts.append(f'integral("{f}", 1h) AS "{f}__wh"')  # W x h
    return await influx.query(
        f'SELECT {", ".join(parts)} FROM "{measurement}" WHERE {_where(device, start, end)}'
    )


# --- InfluxDB: the one-minute rollup (telemetry/rollup.py) -----------------------------------------
def rollup_measurement(measurement: str) -> str:
    return f"{measurement}_1m"


def rollup_select(measurement: str, database: str) -> str:
    """The aggregation the continuous query runs (also the re-roll of late points, with a WHERE)."""
    return (
        f'SELECT sum(*), count(*), min(*), max(*) INTO "{database}".."{rollup_measurement(measurement)}" '
        f'FROM "{database}".."{measurement}"'
    )


async def create_rollup(influx: InfluxClient, measurement: str, *, resample_for: str) -> None:
    """The continuous query that keeps ``{measurement}_1m`` (idempotent: InfluxDB keeps an existing one)."""
    name = f"nattery_{measurement}_1m"
    await influx.admin(
        f'CREATE CONTINUOUS QUERY "{name}" ON "{influx.database}" RESAMPLE EVERY 1m FOR {resample_for} '
        f"BEGIN {rollup_select(measurement, influx.database)} GROUP BY time(1m), * END"
    )


def reroll_statement(database: str, measurement: str, device: str, start_ns: int, end_ns: int) -> str:
    """Recompute the rollup of one device's minutes in [start_ns, end_ns) from its raw points."""
    if any(c in device for c in "'\\"):
        raise ValueError(f"unexpected device tag {device!r}")
    return (
        f"{rollup_select(measurement, database)} WHERE \"device\" = '{device}' "
        f"AND time >= {start_ns} AND time < {end_ns} GROUP BY time(1m), *"
    )


async def reroll(influx: InfluxClient, measurement: str, device: str, start_ns: int, end_ns: int) -> None:
    """Run :func:`reroll_statement` (``ValueError`` for a device tag that cannot be quoted)."""
    await influx.admin(reroll_statement(influx.database, measurement, device, start_ns, end_ns))


async def rollup_and_raw(
    influx: InfluxClient,
    measurement: str,
    device: Row,
    rollup_range: TimeRange | None,
    raw_ranges: Sequence[TimeRange],
    fields: Sequence[str],
    aggregate: str,
    interval: str,
    limit: int,
) -> list[list[RawSeries]]:
    """History read through the rollup, all statements at once: the rollup's rows of ``rollup_range``
    (one per minute, as stored: InfluxDB 1.6 spends as long on GROUP BY time() over 1,440 rollup rows
    as over the raw points) and the raw points of ``raw_ranges`` grouped by ``interval``.

    Columns after time: ``s_<field>`` (sum) and ``n_<field>`` (count) for ``mean``, ``v_<field>`` for
    ``min``/``max``.
    """
    if aggregate == "mean":
        rollup_cols = ", ".join(
            f"{_q('sum_' + f)} AS {_q('s_' + f)}, {_q('count_' + f)} AS {_q('n_' + f)}" for f in fields
        )
        raw_cols = ", ".join(
            f"sum({_q(f)}) AS {_q('s_' + f)}, count({_q(f)}) AS {_q('n_' + f)}" for f in fields
        )
    else:
        rollup_cols = ", ".join(f"{_q(aggregate + '_' + f)} AS {_q('v_' + f)}" for f in fields)
        raw_cols = ", ".join(f"{aggregate}({_q(f)}) AS {_q('v_' + f)}" for f in fields)
    statements: list[str] = []
    if rollup_range is not None:
        first, last = rollup_range
        statements.append(
            f'SELECT {rollup_cols} FROM "{rollup_measurement(measurement)}" WHERE {_where(device, first, last)}'
        )
    group = f"GROUP BY time({interval}) fill(none) LIMIT {limit}"
    statements += [
        f'SELECT {raw_cols} FROM "{measurement}" WHERE {_where(device, a, b)} {group}' for a, b in raw_ranges
    ]
    return list(await asyncio.gather(*(influx.query_raw(q) for q in statements)))
