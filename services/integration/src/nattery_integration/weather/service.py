"""Weather rules: per site with a PV array, fetch Open-Meteo's hourly forecast, make the PV forecast
with pvlib, and publish both (``weather.forecast_updated`` and ``forecast.updated``, PV only: trading
keeps its own load baseline) in one transaction through the outbox. Unchanged forecasts are not
republished."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import (
    EventType,
    ForecastPoint,
    ForecastUpdated,
    WeatherForecastUpdated,
    WeatherPoint,
)
from nattery_integration.events import OUTBOX
from nattery_integration.weather import openmeteo
from nattery_integration.weather.pv import PvArray, PvHour, pv_forecast
from nattery_integration.weather.repository import WeatherRepository

log = logging.getLogger(__name__)

PV_MODEL = "pvlib-pvwatts/open-meteo"
FORECAST_DAYS = 2


def array_of(row: dict[str, Any]) -> PvArray:
    return PvArray(
        latitude=float(row["latitude"]),
        longitude=float(row["longitude"]),
        kwp=float(row["kwp"]),
        tilt_deg=float(row["tilt_deg"]),
        azimuth_deg=float(row["azimuth_deg"]),
        losses_pct=float(row["losses_pct"]),
        inverter_kw=None if row.get("inverter_kw") is None else float(row["inverter_kw"]),
        altitude_m=float(row.get("altitude_m") or 0.0),
    )


class WeatherService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        poke: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.repo = WeatherRepository(pool)
        self.poke = poke
        self.now = now

    async def site(self, client: httpx.AsyncClient, row: dict[str, Any]) -> bool:
        """Fetch and publish one site's forecasts; False when nothing changed since the last one."""
        site_id: uuid.UUID = row["site_id"]
        org_id: uuid.UUID = row["org_id"]
        array = array_of(row)
        hours = await openmeteo.fetch_forecast(client, array.latitude, array.longitude, FORECAST_DAYS)
        pv = pv_forecast(hours, array)
        since = self.now() - timedelta(hours=1)
        hours = [h for h in hours if h.ts > since]
        pv = [p for p in pv if p.end > since]
        if not hours:
            return False
        weather_json = [{**asdict(h), "ts": h.ts.isoformat()} for h in hours]
        pv_json = [{"start": p.start.isoformat(), "end": p.end.isoformat(), "pv_kw": p.pv_kw} for p in pv]
        digest = hashlib.sha256(json.dumps([weather_json, pv_json], sort_keys=True).encode()).hexdigest()
        async with self.pool.connection() as conn, conn.transaction():
            if await self.repo.digest(conn, site_id) == digest:
                return False
            await self.repo.save(conn, site_id, openmeteo.PROVIDER, weather_json, pv_json, digest)
            await OUTBOX.enqueue(
                conn,
                EventType.WEATHER_FORECAST_UPDATED,
                WeatherForecastUpdated(
                    site_id=site_id,
                    org_id=org_id,
                    provider="open-meteo",
                    points=[
                        WeatherPoint(
                            ts=h.ts,
                            temperature_c=h.temperature_c,
                            cloud_cover_pct=h.cloud_cover_pct,
                            irradiance_w_per_m2=h.ghi_w_per_m2,
                            dni_w_per_m2=h.dni_w_per_m2,
                            dhi_w_per_m2=h.dhi_w_per_m2,
                            wind_speed_m_per_s=h.wind_speed_m_per_s,
                        )
                        for h in hours
                    ],
                ),
                subject=str(site_id),
            )
            await OUTBOX.enqueue(
                conn,
                EventType.FORECAST_UPDATED,
                ForecastUpdated(org_id=org_id, site_id=site_id, model=PV_MODEL, points=_points(pv)),
                subject=str(site_id),
            )
        self.poke()
        peak = max((p.pv_kw for p in pv), default=0.0)
        log.info(
            "site %s: weather and PV forecast published (%d hours, peak %.2f kW)", site_id, len(pv), peak
        )
        return True


def _points(pv: list[PvHour]) -> list[ForecastPoint]:
    return [ForecastPoint(start=p.start, end=p.end, pv_kw=max(0.0, p.pv_kw)) for p in pv]
