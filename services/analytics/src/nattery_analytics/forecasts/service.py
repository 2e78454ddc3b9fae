"""Day-ahead load forecasts per site: read the site's history, (re-)train its model on schedule, issue
the next local day, publish ``forecast.updated`` and keep what was issued.

- Which sites: those whose telemetry carried ``load_power_w`` in the last ``forecast_active_days``
  (InfluxDB, grouped by the ``org`` and ``site`` tags the device service writes).
- When: once per site and local day, at or after ``forecast_issue_local`` (16:00): the scheduled
  check runs every ``forecast_check_interval_s``; operators can issue one at any time (endpoints.py).
  One replica runs the scheduled check at a time (a PostgreSQL advisory lock).
- Models live in memory per site and are re-trained when older than ``forecast_retrain_days`` (or on
  the first forecast after a restart); a site with fewer than ``forecast_min_history_days`` of readings
  gets a fallback, and the event's ``model`` says which (``analytics.load.seasonal_naive_fallback``
  from 2 days of readings, ``analytics.load.persistence_fallback`` before: ``model.forecast_day``).
- Publish, then store: a forecast stored is one that was published; a failed publish is retried at the
  next check. ``forecast.updated`` carries the median as ``load_kw``; the quantiles stay in the API
  (the contract has no field for them).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from nattery_analytics.forecasts import repository
from nattery_analytics.forecasts.features import SLOT, issue_instant
from nattery_analytics.forecasts.model import (
    Forecast,
    LoadModel,
    ModelConfig,
    forecast_day,
    recent_days_mean,
)
from nattery_analytics.forecasts.repository import SiteHistory, SiteKey
from nattery_analytics.forecasts.schemas import LoadForecast, LoadForecastPoint
from nattery_analytics.settings import AnalyticsSection
from nattery_contracts.events import EventType, ForecastPoint, ForecastUpdated, make_event
from nattery_shared.errors import DependencyUnavailable, NotFound
from nattery_shared.influx import InfluxClient, InfluxUnavailable
from nattery_shared.rabbit import EventBus, event_source
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the scheduled check ("nattery analytics load forecasts").
SCHEDULE_LOCK = 0x4E41_4C46
SOURCE = event_source("analytics")
ISSUED = Counter("nattery_analytics_load_forecasts_total", "Load forecasts issued", ["model"])
FAILED = Counter("nattery_analytics_load_forecast_failures_total", "Site forecasts that failed", ["stage"])


def _floor_slot(t: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return t - (t - epoch) % SLOT


class LoadForecastService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        influx: InfluxClient,
        bus: EventBus,
        cfg: AnalyticsSection,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._influx = influx
        self._bus = bus
        self._cfg = cfg
        self._clock = clock
        self.zone = ZoneInfo(cfg.forecast_timezone)
        self.config = ModelConfig(
            issue_local=cfg.forecast_issue_local,
            min_history_days=cfg.forecast_min_history_days,
            max_training_days=cfg.forecast_history_days,
        )
        self._models: dict[uuid.UUID, LoadModel] = {}
        self._site_locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._parallel = asyncio.Semaphore(cfg.forecast_concurrency)
        # The scheduled check, every ``forecast_check_interval_s``; a failing check is tried again after
        # the same interval (no faster back-off: each attempt reads every active site's history).
        interval_s = cfg.forecast_check_interval_s
        self.schedule = RetryLoop(
            self.run_due,
            name="scheduled load forecasts",
            logger=log,
            every_s=interval_s,
            backoff=Backoff(initial_s=interval_s, max_s=interval_s),
        )

    def target_day(self, now: datetime) -> date:
        """The local day after ``now``'s."""
        return now.astimezone(self.zone).date() + timedelta(days=1)

    # --- one site --------------------------------------------------------------------------------
    async def issue(self, key: SiteKey, now: datetime | None = None) -> LoadForecast:
        """Forecast the local day after ``now`` for one site, publish it, store it."""
        now = now or self._clock()
        target = self.target_day(now)
        lock = self._site_locks.setdefault(key.site_id, asyncio.Lock())
        async with lock, self._parallel:
            start = _floor_slot(now - timedelta(days=self._cfg.forecast_history_days))
            try:
                history = await repository.site_history(
                    self._influx, self._cfg.forecast_measurement, key, start, _floor_slot(now) + SLOT
                )
            except InfluxUnavailable as err:
                FAILED.labels("history").inc()
                raise DependencyUnavailable("influxdb is unavailable") from err
            forecast = await asyncio.to_thread(self._forecast, key.site_id, history, target)
        result = self._result(key, forecast, history)
        event = ForecastUpdated(
            org_id=key.org_id,
            site_id=key.site_id,
            model=forecast.model,
            points=[
                # Load only: PV is integration's weather-based forecast, which this must not overwrite.
                ForecastPoint(start=p.start, end=p.end, load_kw=p.load_kw)
                for p in result.points
            ],
        )
        try:
            await self._bus.publish(
                make_event(EventType.FORECAST_UPDATED, event, source=SOURCE, subject=str(key.site_id))
            )
        except Exception as err:
            FAILED.labels("publish").inc()
            raise DependencyUnavailable("rabbitmq did not confirm forecast.updated") from err
        async with self._pool.connection() as conn:
            await repository.upsert(conn, key, target, result.model_dump(mode="json"))
        ISSUED.labels(forecast.model).inc()
        log.info(
            "load forecast for site %s on %s: %s (%s)", key.site_id, target, forecast.model, forecast.reason
        )
        return result

    def _forecast(self, site_id: uuid.UUID, history: SiteHistory, target: date) -> Forecast:
        """CPU-bound (runs in a worker thread): re-train when due, then forecast."""
        issue = issue_instant(target - timedelta(days=1), self.zone, self.config.issue_local)
        model = self._models.get(site_id)
        retrain_after = timedelta(days=self._cfg.forecast_retrain_days)
        if (
            model is None
            or not model.trained
            or model.trained_until is None
            or issue - model.trained_until >= retrain_after
        ):
            model = LoadModel(self.config, self.zone)
            model.fit(history.load, issue)
            self._models[site_id] = model
        return forecast_day(model, history.load, target, self.zone, self.config, issued_at=self._clock())

    def _result(self, key: SiteKey, forecast: Forecast, history: SiteHistory) -> LoadForecast:
        pv = recent_days_mean(
            history.pv_kw, history.load, forecast.target_day, self.zone, self.config.issue_local
        )
        low = forecast.quantiles_kw.get(0.1)
        high = forecast.quantiles_kw.get(0.9)

        def finite(x: float) -> float:
            return x if math.isfinite(x) else 0.0

        points = [
            LoadForecastPoint(
                start=s,
                end=s + SLOT,
                load_kw=round(finite(float(forecast.load_kw[i])), 4),
                load_p10_kw=None if low is None else round(float(low[i]), 4),
                load_p90_kw=None if high is None else round(float(high[i]), 4),
                pv_kw=round(max(finite(float(pv[i])), 0.0), 4),
            )
            for i, s in enumerate(forecast.starts)
        ]
        return LoadForecast(
            site_id=key.site_id,
            org_id=key.org_id,
            target_day=forecast.target_day,
            issued_at=forecast.issued_at,
            model=forecast.model,
            reason=forecast.reason,
            points=points,
        )

    async def issue_on_request(self, org_id: uuid.UUID, site_id: uuid.UUID) -> LoadForecast:
        """An operator's forecast for a site of their org, now; 404 when the org's telemetry has no load
        for that site within the history window."""
        key = SiteKey(org_id, site_id)
        now = self._clock()
        since = now - timedelta(days=self._cfg.forecast_history_days)
        try:
            known = await repository.has_load(self._influx, self._cfg.forecast_measurement, key, since)
        except InfluxUnavailable as err:
            raise DependencyUnavailable("influxdb is unavailable") from err
        if not known:
            raise NotFound("no load telemetry for this site")
        return await self.issue(key, now)

    async def latest(self, org_id: uuid.UUID, site_id: uuid.UUID) -> LoadForecast:
        async with self._pool.connection() as conn:
            row = await repository.latest(conn, org_id, site_id)
        if row is None:
            raise NotFound("no load forecast for this site yet")
        return LoadForecast(**row)

    # --- the schedule ----------------------------------------------------------------------------
    async def run_due(self, now: datetime | None = None) -> int:
        """Issue tomorrow's forecast for every active site that has none yet, once the local issue
        time has passed. Returns how many were issued (0 when another replica holds the schedule)."""
        now = now or self._clock()
        today = now.astimezone(self.zone).date()
        if now < issue_instant(today, self.zone, self.config.issue_local):
            return 0
        target = self.target_day(now)
        async with self._pool.connection() as conn:
            if not await repository.try_lock(conn, SCHEDULE_LOCK):
                return 0
            try:  # held until every due site is done, so another replica cannot issue them twice
                since = now - timedelta(days=self._cfg.forecast_active_days)
                sites = await repository.active_sites(self._influx, self._cfg.forecast_measurement, since)
                due = [k for k in sites if not await repository.issued_for(conn, k.site_id, target)]
                results = await asyncio.gather(*(self.issue(k, now) for k in due), return_exceptions=True)
            finally:
                await repository.unlock(conn, SCHEDULE_LOCK)
        for key, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("load forecast for site %s failed: %r", key.site_id, result)
        return sum(not isinstance(r, BaseException) for r in results)

    async def run(self) -> None:
        """The scheduled check, forever; a failing dependency is logged when it starts and when it ends."""
        await self.schedule.run()
