"""Open-Meteo hourly forecast (providers.md §7, providers-2.md §7): pure request/parse code.

Requested with ``timeformat=unixtime`` (epoch seconds: no non-existent local times across DST) and
``timezone=UTC``. Hourly radiation is the mean of the preceding hour; temperature and wind are
instantaneous.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from nattery_integration.markets.prices import raise_for_status
from nattery_integration.providers.errors import ProviderDataInvalid

PROVIDER = "open_meteo"
HOURLY = (
    "temperature_2m",
    "cloud_cover",
    "shortwave_radiation",
    "direct_normal_irradiance",
    "diffuse_radiation",
    "wind_speed_10m",
)


@dataclass(frozen=True)
class WeatherHour:
    ts: datetime  # end of the hour the radiation values average
    temperature_c: float | None
    cloud_cover_pct: float | None
    ghi_w_per_m2: float | None
    dni_w_per_m2: float | None
    dhi_w_per_m2: float | None
    wind_speed_m_per_s: float | None


class Hourly(BaseModel):
    model_config = ConfigDict(extra="ignore")

    time: list[int]
    temperature_2m: list[float | None]
    cloud_cover: list[float | None]
    shortwave_radiation: list[float | None]
    direct_normal_irradiance: list[float | None]
    diffuse_radiation: list[float | None]
    wind_speed_10m: list[float | None]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    latitude: float
    longitude: float
    hourly: Hourly


def _finite(v: float | None, lo: float, hi: float, name: str) -> float | None:
    if v is None:
        return None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ProviderDataInvalid(PROVIDER, f"{name} {v} outside [{lo}, {hi}]")
    return float(v)


def parse_forecast(body: bytes) -> list[WeatherHour]:
    try:
        answer = Answer.model_validate(json.loads(body))
    except (ValueError, ValidationError) as e:
        raise ProviderDataInvalid(
            PROVIDER, f"the forecast is not the expected JSON: {str(e)[:300]}", excerpt=body
        ) from e
    h = answer.hourly
    n = len(h.time)
    if n == 0:
        raise ProviderDataInvalid(PROVIDER, "the forecast has no hours")
    for name in HOURLY:
        if len(getattr(h, name)) != n:
            raise ProviderDataInvalid(
                PROVIDER, f"hourly.{name} has {len(getattr(h, name))} values for {n} times"
            )
    out = []
    for i, t in enumerate(h.time):
        out.append(
            WeatherHour(
                ts=datetime.fromtimestamp(t, UTC),
                temperature_c=_finite(h.temperature_2m[i], -90, 70, "temperature_2m"),
                cloud_cover_pct=_finite(h.cloud_cover[i], 0, 100, "cloud_cover"),
                ghi_w_per_m2=_finite(h.shortwave_radiation[i], 0, 1500, "shortwave_radiation"),
                dni_w_per_m2=_finite(h.direct_normal_irradiance[i], 0, 1500, "direct_normal_irradiance"),
                dhi_w_per_m2=_finite(h.diffuse_radiation[i], 0, 1000, "diffuse_radiation"),
                wind_speed_m_per_s=_finite(h.wind_speed_10m[i], 0, 120, "wind_speed_10m"),
            )
        )
    if any(b.ts <= a.ts for a, b in itertools.pairwise(out)):
        raise ProviderDataInvalid(PROVIDER, "hourly.time is not strictly increasing")
    return out


async def fetch_forecast(
    client: httpx.AsyncClient, latitude: float, longitude: float, days: int = 2
) -> list[WeatherHour]:
    response = await client.get(
        "forecast",
        params={
            "latitude": f"{latitude:.4f}",
            "longitude": f"{longitude:.4f}",
            "hourly": ",".join(HOURLY),
            "wind_speed_unit": "ms",
            "forecast_days": days,
            "timezone": "UTC",
            "timeformat": "unixtime",
        },
        extensions={"endpoint": "forecast"},
    )
    raise_for_status(response, PROVIDER)
    return parse_forecast(response.content)
