"""Energy flows: hourly rollups per device kept up to date from the device service's telemetry, and the
hour, day and month figures of a site or an org read from them.

The job (``FlowService.schedule``, every ``flows_interval_s``; one replica at a time, a PostgreSQL
advisory lock): count the telemetry values of every device per quarter-hour over the last ``flows_lookback_h``
(one InfluxQL statement), compare with the counts each stored hour was computed from (its own, and the
neighbouring quarter-hours', since an hour's edges reach into its neighbours), and recompute the hours
whose counts changed: new hours, late points, a bridge replaying its outbox, a back-fill. An hour is
stored once it has ended. Recomputing writes the same row again (upsert per device and hour), so a
second run, or two replicas, change nothing. ``refresh(lookback=...)`` reaches further back by hand.

Coverage: each device is expected to report from its first hour with data to the last hour the job has
looked at (``checked_until``); within that, an hour without a row is a gap of 3,600 missing seconds.
A site's or an org's figure sums device-seconds.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from nattery_analytics.flows import repository
from nattery_analytics.flows.integrate import Limits, Quantity, device_hours
from nattery_analytics.flows.repository import HOUR, QUARTER, DeviceKey, FlowDevice, HourRow
from nattery_analytics.flows.schemas import (
    DeviceFlows,
    Energy,
    FlowPoint,
    Interval,
    OrgFlows,
    SiteFlows,
    SiteSummary,
)
from nattery_analytics.settings import AnalyticsSection
from nattery_shared.errors import NotFound, Unprocessable
from nattery_shared.influx import InfluxClient
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the rollup job ("nattery analytics energy flows").
ROLLUP_LOCK = 0x4E41_4546
HOURS_COMPUTED = Counter("nattery_analytics_flow_hours_total", "Device-hours of energy flows (re)computed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Longest range per request, by interval (a year of days, ten years of months, a month of hours).
MAX_RANGE: dict[Interval, timedelta] = {
    Interval.HOUR: timedelta(days=31),
    Interval.DAY: timedelta(days=400),
    Interval.MONTH: timedelta(days=3700),
}
DEFAULT_RANGE: dict[Interval, timedelta] = {
    Interval.HOUR: timedelta(days=1),
    Interval.DAY: timedelta(days=31),
    Interval.MONTH: timedelta(days=366),
}
YEARS = (2000, 2100)  # requests outside these years are refused (no telemetry, and no overflow)


def floor_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t - (t - _EPOCH) % HOUR


def ceil_hour(t: datetime) -> datetime:
    f = floor_hour(t)
    return f if f == t else f + HOUR


@dataclass(frozen=True)
class RefreshReport:
    devices: int  # devices with telemetry in the window
    hours: int  # device-hours recomputed
    until: datetime  # hours before this had ended and were looked at


def _runs(hours: list[datetime], join: timedelta = 3 * HOUR) -> list[tuple[datetime, datetime]]:
    """Sorted hours grouped into [first, last] runs (close ones read together)."""
    out: list[tuple[datetime, datetime]] = []
    for h in hours:
        if out and h - out[-1][1] <= join:
            out[-1] = (out[-1][0], h)
        else:
            out.append((h, h))
    return out


class FlowService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        influx: InfluxClient,
        cfg: AnalyticsSection,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._influx = influx
        self._cfg = cfg
        self._clock = clock
        self.timezone = cfg.flows_timezone
        self.zone = ZoneInfo(cfg.flows_timezone)
        self.limits = Limits(
            power_max_gap_s=cfg.flows_power_max_gap_s,
            counter_max_gap_s=cfg.flows_counter_max_gap_s,
            max_power_kw=cfg.flows_max_power_kw,
        )
        self.schedule = RetryLoop(
            self.refresh,
            name="energy flow rollups",
            logger=log,
            every_s=cfg.flows_interval_s,
            backoff=Backoff(initial_s=min(30.0, cfg.flows_interval_s), max_s=cfg.flows_interval_s),
        )

    # --- the job ---------------------------------------------------------------------------------
    async def refresh(
        self, now: datetime | None = None, *, lookback: timedelta | None = None, force: bool = False
    ) -> RefreshReport | None:
        """Recompute the ended hours of the last ``lookback`` whose telemetry changed (``force``: every
        hour with telemetry); None when another replica holds the job."""
        until = floor_hour(now or self._clock())
        since = until - (lookback or timedelta(hours=self._cfg.flows_lookback_h))
        async with self._pool.connection() as lock_conn:
            if not await repository.try_lock(lock_conn, ROLLUP_LOCK):
                return None
            try:
                return await self._refresh(since, until, force=force)
            finally:
                await repository.unlock(lock_conn, ROLLUP_LOCK)

    async def _refresh(self, since: datetime, until: datetime, *, force: bool) -> RefreshReport:
        measurement = self._cfg.flows_measurement
        counts = await repository.quarter_counts(self._influx, measurement, since - HOUR, until + HOUR)
        async with self._pool.connection() as conn:
            stored = await repository.stored_counts(conn, since, until)
        stored_hours: dict[uuid.UUID, set[datetime]] = {}
        for device_id, hour in stored:
            stored_hours.setdefault(device_id, set()).add(hour)
        total = 0
        for key, quarters in counts.items():
            hours: dict[datetime, int] = {}
            for q, n in quarters.items():
                hours[floor_hour(q)] = hours.get(floor_hour(q), 0) + n
            candidates = {h for h in hours if since <= h < until} | stored_hours.get(key.device_id, set())
            dirty: list[tuple[datetime, list[int]]] = []
            for h in sorted(candidates):
                fingerprint = self._fingerprint(h, hours, quarters)
                if force or stored.get((key.device_id, h)) != fingerprint:
                    dirty.append((h, fingerprint))
            if not dirty:
                continue
            rows = await self._compute(key, dirty)
            first = min(candidates)  # not the hour before the window (read for context only)
            async with self._pool.connection() as conn, conn.transaction():
                await repository.upsert_hours(conn, rows)
                await repository.upsert_device(conn, key, first, until)
            total += len(rows)
            HOURS_COMPUTED.inc(len(rows))
        async with self._pool.connection() as conn:
            await repository.mark_checked(conn, until)
        if total:
            log.info("energy flows: %d device-hours recomputed before %s", total, until.isoformat())
        return RefreshReport(devices=len(counts), hours=total, until=until)

    def _fingerprint(
        self, h: datetime, hours: dict[datetime, int], quarters: dict[datetime, int]
    ) -> list[int]:
        """What an hour's figures depend on: its own values and those of its neighbours that a covered
        segment can reach (the neighbouring quarter-hours when no gap limit exceeds 15 minutes, so the
        hour that has just ended is not recomputed on every run while the next one fills)."""
        if max(self.limits.power_max_gap_s, self.limits.counter_max_gap_s) <= QUARTER.total_seconds():
            return [quarters.get(h - QUARTER, 0), hours.get(h, 0), quarters.get(h + HOUR, 0)]
        return [hours.get(h - HOUR, 0), hours.get(h, 0), hours.get(h + HOUR, 0)]

    async def _compute(self, key: DeviceKey, dirty: list[tuple[datetime, list[int]]]) -> list[HourRow]:
        fingerprints = dict(dirty)
        rows: list[HourRow] = []
        # Each run is read with an hour either side: the segments that cross its edges.
        for first, last in _runs([h for h, _ in dirty]):
            fields = await repository.samples(
                self._influx, self._cfg.flows_measurement, key, first - HOUR, last + 2 * HOUR
            )
            n = int((last - first) // HOUR) + 1
            figures = device_hours(fields, (first - _EPOCH).total_seconds(), n, self.limits)
            for i in range(n):
                hour = first + i * HOUR
                if hour not in fingerprints:
                    continue
                values: dict[str, Any] = {}
                for q in Quantity:
                    f = figures[q][i]
                    values[f"{q.value}_kwh"] = f.kwh
                    values[f"{q.value}_covered_s"] = f.covered_s
                    values[f"{q.value}_source"] = None if f.source is None else f.source.value
                rows.append(HourRow(key.device_id, hour, key.org_id, key.site_id, fingerprints[hour], values))
        return rows

    async def run(self) -> None:
        await self.schedule.run()

    # --- reads -----------------------------------------------------------------------------------
    def _range(
        self, start: datetime | None, end: datetime | None, interval: Interval
    ) -> tuple[datetime, datetime]:
        for name, value in (("from", start), ("to", end)):
            if value is not None and not YEARS[0] <= value.year <= YEARS[1]:
                raise Unprocessable(f"`{name}` must be between the years {YEARS[0]} and {YEARS[1]}")
        end = ceil_hour(end) if end is not None else ceil_hour(self._clock())
        start = floor_hour(start) if start is not None else end - DEFAULT_RANGE[interval]
        if end <= start:
            raise Unprocessable("`to` must be after `from`")
        if end - start > MAX_RANGE[interval]:
            days = MAX_RANGE[interval].days
            raise Unprocessable(
                f"at most {days} days at interval {interval.value}; ask for a coarser interval"
            )
        return start, end

    def _buckets(self, start: datetime, end: datetime, interval: Interval) -> list[tuple[datetime, datetime]]:
        """Unclipped bucket starts and ends (UTC) covering ``[start, end)``."""
        out: list[tuple[datetime, datetime]] = []
        if interval is Interval.HOUR:
            t = start
            while t < end:
                out.append((t, t + HOUR))
                t += HOUR
            return out
        local = start.astimezone(self.zone)
        if interval is Interval.DAY:
            day = local.date()
            while True:
                b = datetime(day.year, day.month, day.day, tzinfo=self.zone).astimezone(UTC)
                nxt = day + timedelta(days=1)
                e = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.zone).astimezone(UTC)
                if b >= end:
                    return out
                out.append((b, e))
                day = nxt
        y, m = local.year, local.month
        while True:
            b = datetime(y, m, 1, tzinfo=self.zone).astimezone(UTC)
            y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
            e = datetime(y2, m2, 1, tzinfo=self.zone).astimezone(UTC)
            if b >= end:
                return out
            out.append((b, e))
            y, m = y2, m2

    async def site_flows(
        self,
        org_id: uuid.UUID,
        site_id: uuid.UUID,
        start: datetime | None,
        end: datetime | None,
        interval: Interval,
    ) -> SiteFlows:
        start, end = self._range(start, end, interval)
        devices, rows = await self._read(org_id, site_id, start, end, interval)
        if not devices:
            raise NotFound("no energy flows for this site")
        buckets = self._buckets(start, end, interval)
        per_device = {d.device_id: self._points(buckets, start, end, [d], rows) for d in devices}
        return SiteFlows(
            site_id=site_id,
            interval=interval,
            timezone=self.timezone,
            start=start,
            end=end,
            total=self._points(buckets, start, end, devices, rows),
            devices=[DeviceFlows(device_id=d, points=p) for d, p in per_device.items()],
        )

    async def org_flows(
        self, org_id: uuid.UUID, start: datetime | None, end: datetime | None, interval: Interval
    ) -> OrgFlows:
        start, end = self._range(start, end, interval)
        devices, rows = await self._read(org_id, None, start, end, interval)
        buckets = self._buckets(start, end, interval)
        whole = [(start, end)]
        by_site: dict[uuid.UUID, list[FlowDevice]] = {}
        for d in devices:
            by_site.setdefault(d.site_id, []).append(d)
        merged = _merge_to_one(rows, start)  # the whole range as one bucket per device
        sites = [
            SiteSummary(site_id=site_id, total=self._points(whole, start, end, site_devices, merged)[0])
            for site_id, site_devices in by_site.items()
        ]
        return OrgFlows(
            org_id=org_id,
            interval=interval,
            timezone=self.timezone,
            start=start,
            end=end,
            total=self._points(buckets, start, end, devices, rows),
            sites=sites,
        )

    async def _read(
        self, org_id: uuid.UUID, site_id: uuid.UUID | None, start: datetime, end: datetime, interval: Interval
    ) -> tuple[list[FlowDevice], dict[tuple[uuid.UUID, datetime], dict[str, Any]]]:
        zone = "UTC" if interval is Interval.HOUR else self.timezone
        async with self._pool.connection() as conn:
            devices = await repository.devices(conn, org_id, site_id)
            if not devices:
                return [], {}
            raw = await repository.buckets(
                conn, org_id, site_id, unit=interval.value, timezone=zone, start=start, end=end
            )
        return devices, {(r["device_id"], r["bucket"].astimezone(UTC)): r for r in raw}

    def _points(
        self,
        buckets: list[tuple[datetime, datetime]],
        start: datetime,
        end: datetime,
        devices: Iterable[FlowDevice],
        rows: dict[tuple[uuid.UUID, datetime], dict[str, Any]],
    ) -> list[FlowPoint]:
        devices = list(devices)
        points = []
        for b, e in buckets:
            cs, ce = max(b, start), min(e, end)
            energies: dict[str, Energy] = {}
            for q in Quantity:
                kwh: float | None = None
                covered = missing = 0.0
                sources: set[str] = set()
                for d in devices:
                    lo, hi = max(cs, d.first_hour), min(ce, d.checked_until)
                    expected = max((hi - lo).total_seconds(), 0.0)
                    row = rows.get((d.device_id, b))
                    c = float(row[f"{q.value}_covered_s"] or 0.0) if row else 0.0
                    if row and row[f"{q.value}_kwh"] is not None:
                        kwh = (kwh or 0.0) + float(row[f"{q.value}_kwh"])
                    if row and row[f"{q.value}_source"]:
                        sources.add(row[f"{q.value}_source"])
                    covered += c
                    missing += max(expected - c, 0.0)
                seen = covered + missing
                energies[q.value] = Energy(
                    kwh=None if kwh is None else round(kwh, 4),
                    covered_s=round(covered, 1),
                    missing_s=round(missing, 1),
                    coverage=None if seen <= 0 else round(min(covered / seen, 1.0), 4),
                    source=None if not sources else ("mixed" if len(sources) > 1 else sources.pop()),
                )
            points.append(FlowPoint(start=cs, end=ce, **energies))
        return points


def _merge_to_one(
    rows: dict[tuple[uuid.UUID, datetime], dict[str, Any]], key_time: datetime
) -> dict[tuple[uuid.UUID, datetime], dict[str, Any]]:
    """Every device's bucket rows summed into one row keyed at ``key_time``."""
    out: dict[tuple[uuid.UUID, datetime], dict[str, Any]] = {}
    for (device_id, _), row in rows.items():
        acc = out.setdefault((device_id, key_time), {})
        for q in Quantity:
            k, c, s = f"{q.value}_kwh", f"{q.value}_covered_s", f"{q.value}_source"
            if row[k] is not None:
                acc[k] = (acc.get(k) or 0.0) + float(row[k])
            else:
                acc.setdefault(k, None)
            acc[c] = (acc.get(c) or 0.0) + float(row[c] or 0.0)
            if row[s]:
                acc[s] = row[s] if acc.get(s) in (None, row[s]) else "mixed"
            else:
                acc.setdefault(s, None)
    return out
