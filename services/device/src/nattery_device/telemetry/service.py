"""Telemetry queries: latest values (Redis), history with downsampling, statistics (InfluxQL).

The device is always looked up in the caller's org first (PostgreSQL), and the InfluxQL filters on the
org tag as well, so no query can reach another org's series. Identifiers in the InfluxQL text are
validated UUIDs, field names match ``[a-z][a-z0-9_]*`` and times are integer nanoseconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter
from redis.asyncio import Redis

from nattery_device.devices.schemas import MEASUREMENT, DeviceKind
from nattery_device.presence import latest as presence_latest
from nattery_device.telemetry import repository
from nattery_device.telemetry.rollup import ROLLUP_FOR, ROLLUP_LAG
from nattery_device.telemetry.schemas import (
    Aggregate,
    FieldStats,
    History,
    HistoryPoint,
    Latest,
    Stats,
    as_float,
    interval_seconds,
)
from nattery_shared.errors import BadRequest, DependencyUnavailable, NotFound
from nattery_shared.influx import InfluxClient, InfluxError, InfluxUnavailable

log = logging.getLogger(__name__)
MAX_POINTS = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POINTS = TypeAdapter(list[HistoryPoint])
PARALLEL_STATEMENTS = 2


async def _device(pool: AsyncConnectionPool, org_id: uuid.UUID, device_id: uuid.UUID) -> dict[str, Any]:
    async with pool.connection() as conn:
        row = await repository.device(conn, org_id, device_id)
    if row is None:
        raise NotFound("device not found")
    return row


async def _devices(
    pool: AsyncConnectionPool, org_id: uuid.UUID, site_id: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        if site_id is not None and not await repository.site_exists(conn, org_id, site_id):
            raise NotFound("site not found")
        return await repository.devices(conn, org_id, site_id, limit)


def _latest(device_id: uuid.UUID, site_id: uuid.UUID, raw: dict[Any, Any]) -> Latest:
    """A device's Redis hash (presence/latest.py owns its layout) as the API's :class:`Latest`."""
    return _as_latest(device_id, site_id, presence_latest.merge(raw))


def _as_latest(device_id: uuid.UUID, site_id: uuid.UUID, record: presence_latest.LatestRecord) -> Latest:
    return Latest(
        device_id=device_id,
        site_id=site_id,
        ts=record.ts,
        seq=record.seq,
        values=record.values,
        status=record.status,
        status_at=record.status_at,
    )


async def latest_for_device(
    pool: AsyncConnectionPool, redis: Redis, org_id: uuid.UUID, device_id: uuid.UUID
) -> Latest:
    device = await _device(pool, org_id, device_id)
    [record] = await presence_latest.read(redis, [device_id])
    return _as_latest(device_id, device["site_id"], record)


async def latest_for_many(
    pool: AsyncConnectionPool, redis: Redis, org_id: uuid.UUID, *, site_id: uuid.UUID | None, limit: int
) -> list[Latest]:
    devices = await _devices(pool, org_id, site_id, limit)
    records = await presence_latest.read(redis, [d["id"] for d in devices])
    return [_as_latest(d["id"], d["site_id"], r) for d, r in zip(devices, records, strict=True)]


def _check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise BadRequest("end must be after start")
    if end - start > timedelta(days=366):
        raise BadRequest("range longer than 366 days")


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


@contextlib.contextmanager
def _influx_errors() -> Iterator[None]:
    """InfluxDB failures as API errors: down -> 503, a refused statement -> 400."""
    try:
        yield
    except InfluxUnavailable as err:
        raise DependencyUnavailable("influxdb is unavailable") from err
    except InfluxError as err:
        raise BadRequest(f"query refused: {err}") from err


async def history(
    pool: AsyncConnectionPool,
    influx: InfluxClient,
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    start: datetime,
    end: datetime,
    fields: list[str] | None,
    interval: str | None,
    aggregate: Aggregate,
    limit: int,
) -> History:
    _check_range(start, end)
    device = await _device(pool, org_id, device_id)
    measurement = MEASUREMENT[DeviceKind(device["kind"])]
    if interval is not None:
        try:
            step_s = interval_seconds(interval)
        except ValueError as err:
            raise BadRequest(str(err)) from err
        if (end - start).total_seconds() / step_s > MAX_POINTS:
            raise BadRequest(f"more than {MAX_POINTS} intervals: choose a longer interval or a shorter range")
        if not fields:
            raise BadRequest("choose fields (fields=a,b) when downsampling")
        if step_s % 60 == 0 and aggregate in _ROLLUP_AGG and await _rollup_ready(influx, measurement):
            rolled = await _history_from_rollup(
                influx, device, measurement, start, end, fields, interval, aggregate, limit
            )
            return History(
                device_id=device_id,
                measurement=measurement,
                interval=interval,
                aggregate=aggregate,
                fields=fields,
                points=rolled,
            )
        # InfluxDB 1.x runs one statement on one core: split the fields over parallel statements.
        groups = [fields[i::PARALLEL_STATEMENTS] for i in range(min(PARALLEL_STATEMENTS, len(fields)))]
        with _influx_errors():
            results = await repository.downsampled(
                influx, measurement, device, start, end, groups, aggregate.value, interval, limit
            )
        # Rows straight from InfluxDB's lists (no dict and datetime per row in the client) and validated
        # in one pydantic-core call: a day of one-minute points is 1,440 rows per statement, and this
        # endpoint's own time was mostly per-row Python (README "Benchmarks").
        merged: dict[int, dict[str, float | None]] = {}
        for series_list in results:
            for s in series_list:
                aggregates = s.columns[1:]  # "time" first, then the aggregates in SELECT order
                for row in s.values:
                    values = merged.get(row[0])
                    if values is None:
                        values = merged[row[0]] = {}
                    for name, value in zip(aggregates, row[1:], strict=True):
                        values[name] = None if value is None else float(value)
        downsampled = _POINTS.validate_python(
            [
                {"time": _from_ms(t), "values": {f: v.get(f) for f in fields}}
                for t, v in sorted(merged.items())[:limit]
            ]
        )
        return History(
            device_id=device_id,
            measurement=measurement,
            interval=interval,
            aggregate=aggregate,
            fields=fields,
            points=downsampled,
        )
    with _influx_errors():
        series = await repository.points(influx, measurement, device, start, end, fields, limit)
    points: list[HistoryPoint] = []
    names: list[str] = list(fields or [])
    for one in series:
        columns = [c for c in one.columns if c not in ("time", "org", "site", "device")]
        if not names:
            names = columns
        for point in one.rows:
            points.append(
                HistoryPoint(time=point["time"], values={c: as_float(point.get(c)) for c in columns})
            )
    return History(
        device_id=device_id,
        measurement=measurement,
        interval=interval,
        aggregate=aggregate if interval else None,
        fields=names,
        points=points,
    )


# --- the one-minute rollup (telemetry/rollup.py) ------------------------------------------------
_ROLLUP_AGG = {Aggregate.MEAN, Aggregate.MIN, Aggregate.MAX}
_ROLLUP_RETRY = timedelta(minutes=1)
_rollups: dict[tuple[str, str], bool] = {}  # (database, measurement) -> continuous query in place
_rollup_tried: dict[str, datetime] = {}


async def ensure_rollups(influx: InfluxClient) -> bool:
    """Create (idempotently) the rollup continuous query of every measurement; True when all exist."""
    ok = True
    for measurement in MEASUREMENT.values():
        try:
            await repository.create_rollup(influx, measurement, resample_for=ROLLUP_FOR)
        except (InfluxError, InfluxUnavailable, httpx.HTTPError) as err:
            log.warning("history rollup for %s not in place (raw points used): %s", measurement, err)
            ok = False
            continue
        _rollups[(influx.database, measurement)] = True
    _rollup_tried[influx.database] = datetime.now(UTC)
    return ok


async def _rollup_ready(influx: InfluxClient, measurement: str) -> bool:
    key = (influx.database, measurement)
    if key not in _rollups:
        tried = _rollup_tried.get(influx.database)
        if tried is None or datetime.now(UTC) - tried > _ROLLUP_RETRY:
            await ensure_rollups(influx)
    return _rollups.get(key, False)


def _minute_floor(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


async def _history_from_rollup(
    influx: InfluxClient,
    device: dict[str, Any],
    measurement: str,
    start: datetime,
    end: datetime,
    fields: list[str],
    interval: str,
    aggregate: Aggregate,
    limit: int,
) -> list[HistoryPoint]:
    """Whole minutes older than ``ROLLUP_LAG`` from the rollup, the rest from the raw points; buckets
    split between the two are merged (mean as total sum / total count, min of mins, max of maxes)."""
    first = _minute_floor(start)
    if first < start:
        first += timedelta(minutes=1)
    last = min(_minute_floor(end), _minute_floor(datetime.now(UTC) - ROLLUP_LAG))
    # Columns "s_<field>" (sum), "n_<field>" (count) for a mean, "v_<field>" for min/max; the rollup's
    # rows come one per minute and are put into buckets here.
    rollup_range: tuple[datetime, datetime] | None = None
    raw_ranges = [(start, end)]
    if first < last:
        rollup_range = (first, last)
        raw_ranges = [(start, first), (last, end)]
    with _influx_errors():
        results = await repository.rollup_and_raw(
            influx,
            measurement,
            device,
            rollup_range,
            [(a, b) for a, b in raw_ranges if a < b],
            fields,
            aggregate.value,
            interval,
            limit,
        )
    step_ms = interval_seconds(interval) * 1000  # buckets aligned to the epoch, as InfluxDB's GROUP BY
    # Per bucket (epoch ms) a flat list, two slots per field (in ``fields`` order): [sum, count] for a
    # mean, [value so far, unused] for min/max (None until a value comes). One list per bucket and the
    # columns resolved once per series: a day is 1,440 rows x 5 fields, and this loop was most of the
    # endpoint's own time when it kept a dict and a list per field and bucket.
    mean = aggregate is Aggregate.MEAN
    pick = min if aggregate is Aggregate.MIN else max
    width = 2 * len(fields)
    slot = {f: 2 * i for i, f in enumerate(fields)}
    merged: dict[int, list[Any]] = {}
    for series_list in results:
        for series in series_list:
            # (column index in the row, slot in the bucket's list): s_ -> sum, n_ -> count, v_ -> value
            cols = [
                (c, slot[name[2:]] + (name[0] == "n"))
                for c, name in enumerate(series.columns)
                if c and name[2:] in slot
            ]
            for row in series.values:
                t = row[0]
                key = t - t % step_ms
                acc = merged.get(key)
                if acc is None:
                    acc = merged[key] = [0.0] * width if mean else [None] * width
                if mean:
                    for c, k in cols:
                        value = row[c]
                        if value is not None:
                            acc[k] += float(value)
                else:
                    for c, k in cols:
                        value = row[c]
                        if value is not None:
                            acc[k] = float(value) if acc[k] is None else pick(acc[k], float(value))
    points = []
    for t, acc in sorted(merged.items())[:limit]:
        if mean:
            values = {f: acc[k] / acc[k + 1] if acc[k + 1] else None for f, k in slot.items()}
        else:
            values = {f: acc[k] for f, k in slot.items()}
        points.append({"time": _from_ms(t), "values": values})
    return _POINTS.validate_python(points)


def history_csv(result: History) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["time", *result.fields])
    for point in result.points:
        writer.writerow(
            [
                point.time.isoformat(),
                *("" if point.values.get(f) is None else point.values[f] for f in result.fields),
            ]
        )
    return out.getvalue()


async def stats(
    pool: AsyncConnectionPool,
    influx: InfluxClient,
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    start: datetime,
    end: datetime,
    fields: list[str],
) -> Stats:
    _check_range(start, end)
    device = await _device(pool, org_id, device_id)
    measurement = MEASUREMENT[DeviceKind(device["kind"])]
    with _influx_errors():
        series = await repository.field_stats(influx, measurement, device, start, end, fields)
    # InfluxDB 1.x may put integral() on a row of its own (another timestamp): merge every row.
    row: dict[str, Any] = {}
    for s in series:
        for r in s.rows:
            row.update({k: v for k, v in r.items() if v is not None})
    result: dict[str, FieldStats] = {}
    for f in fields:
        wh = row.get(f"{f}__wh")
        result[f] = FieldStats(
            mean=as_float(row.get(f"{f}__mean")),
            min=as_float(row.get(f"{f}__min")),
            max=as_float(row.get(f"{f}__max")),
            count=int(row.get(f"{f}__count") or 0),
            energy_kwh=(float(wh) / 1000.0 if wh is not None else (0.0 if f.endswith("_w") else None)),
        )
    return Stats(device_id=device_id, start=start, end=end, fields=result)
