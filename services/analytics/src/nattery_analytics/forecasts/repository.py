"""Every query of the forecasts area: site load history from InfluxDB (the device service's telemetry),
issued forecasts in PostgreSQL (schema ``analytics``).

InfluxQL text carries only validated UUIDs, a measurement name from settings checked against
``[a-z][a-z0-9_]*`` and integer nanosecond times, so nothing from a request reaches it unquoted.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from nattery_analytics.forecasts.features import SLOT, LoadHistory
from nattery_shared.influx import InfluxClient

Row = dict[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# One statement reads at most this much raw telemetry (InfluxDB 1.x answers one statement on one core).
CHUNK = timedelta(days=31)


def _ns(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _measurement(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"unexpected measurement name {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class SiteKey:
    org_id: uuid.UUID
    site_id: uuid.UUID


@dataclass(frozen=True)
class SiteHistory:
    load: LoadHistory
    pv_kw: np.ndarray  # same grid, NaN where no PV reading


async def active_sites(influx: InfluxClient, measurement: str, since: datetime) -> list[SiteKey]:
    """Sites (with their org) that reported ``load_power_w`` since ``since``."""
    q = (
        f'SELECT last("load_power_w") FROM {_measurement(measurement)} WHERE time >= {_ns(since)} '
        'GROUP BY "org", "site"'
    )
    out: list[SiteKey] = []
    for s in await influx.query_raw(q):
        try:
            out.append(SiteKey(uuid.UUID(s.tags.get("org", "")), uuid.UUID(s.tags.get("site", ""))))
        except ValueError:
            continue  # a series tagged by hand or by an older writer: not a site we can name
    return out


async def site_history(
    influx: InfluxClient, measurement: str, key: SiteKey, start: datetime, end: datetime
) -> SiteHistory:
    """Half-hourly mean load and PV (kW) of one site in ``[start, end)`` (both on half-hours).

    Means per device, then summed over the site's devices: two inverters each see their own part of the
    house. A half-hour where no device reported stays NaN (a gap, never zero)."""
    n = int((end - start) // SLOT)
    load = np.full(n, np.nan)
    pv = np.full(n, np.nan)
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(chunk_start + CHUNK, end)
        q = (
            f'SELECT mean("load_power_w") AS load_w, mean("pv_power_w") AS pv_w FROM {_measurement(measurement)} '
            f"WHERE \"org\" = '{key.org_id}' AND \"site\" = '{key.site_id}' "
            f"AND time >= {_ns(chunk_start)} AND time < {_ns(chunk_end)} "
            'GROUP BY time(30m), "device" fill(none)'
        )
        for series in await influx.query_raw(q):
            cols = series.columns  # time (epoch ms), load_w, pv_w
            i_load, i_pv = cols.index("load_w"), cols.index("pv_w")
            for row in series.values:
                i = int((_EPOCH + timedelta(milliseconds=row[0]) - start) // SLOT)
                if not 0 <= i < n:
                    continue
                for arr, col in ((load, i_load), (pv, i_pv)):
                    value = row[col]
                    if value is not None:
                        arr[i] = (0.0 if np.isnan(arr[i]) else arr[i]) + float(value) / 1000.0
        chunk_start = chunk_end
    return SiteHistory(LoadHistory(start, load), pv)


async def has_load(influx: InfluxClient, measurement: str, key: SiteKey, since: datetime) -> bool:
    q = (
        f'SELECT count("load_power_w") FROM {_measurement(measurement)} '
        f"WHERE \"org\" = '{key.org_id}' AND \"site\" = '{key.site_id}' AND time >= {_ns(since)}"
    )
    series = await influx.query_raw(q)
    return bool(series and series[0].values and series[0].values[0][1])


async def upsert(conn: AsyncConnection[Any], key: SiteKey, target_day: date, values: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO load_forecasts (site_id, target_day, org_id, issued_at, model, reason, points)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (site_id, target_day) DO UPDATE SET org_id = EXCLUDED.org_id,
             issued_at = EXCLUDED.issued_at, model = EXCLUDED.model, reason = EXCLUDED.reason,
             points = EXCLUDED.points""",
        (
            key.site_id,
            target_day,
            key.org_id,
            values["issued_at"],
            values["model"],
            values["reason"],
            Jsonb(values["points"]),
        ),
    )


async def issued_for(conn: AsyncConnection[Any], site_id: uuid.UUID, target_day: date) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM load_forecasts WHERE site_id = %s AND target_day = %s", (site_id, target_day)
    )
    return await cur.fetchone() is not None


async def latest(conn: AsyncConnection[Any], org_id: uuid.UUID, site_id: uuid.UUID) -> Row | None:
    cur = await conn.execute(
        """SELECT site_id, org_id, target_day, issued_at, model, reason, points FROM load_forecasts
           WHERE org_id = %s AND site_id = %s ORDER BY target_day DESC LIMIT 1""",
        (org_id, site_id),
    )
    row: Row | None = await cur.fetchone()
    return row


async def try_lock(conn: AsyncConnection[Any], key: int) -> bool:
    """A session advisory lock: one replica runs the scheduled forecasts at a time."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (key,))
    row: Row | None = await cur.fetchone()
    return bool(row and row["locked"])


async def unlock(conn: AsyncConnection[Any], key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
