"""PV AC power from Open-Meteo hourly irradiance and a site's array, with pvlib (providers-2.md §7).

Hourly radiation averages the preceding hour, so the sun's position is taken at the half hour before
each timestamp. POA irradiance by Hay-Davies (needs extraterrestrial DNI), cell temperature by SAPM
(open rack, glass/polymer), DC by PVWatts with the array's losses, AC by the PVWatts inverter model,
clipped to the inverter's rating (the array's kWp when none is given). Where the forecast gives only
GHI, DNI/DHI come from the Erbs decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pvlib

from nattery_integration.weather.openmeteo import WeatherHour

GAMMA_PDC_PER_C = -0.004
INVERTER_ETA_NOM = 0.96


@dataclass(frozen=True)
class PvArray:
    latitude: float
    longitude: float
    kwp: float
    tilt_deg: float
    azimuth_deg: float  # degrees east of north, 180 = south (pvlib)
    losses_pct: float = 14.0
    inverter_kw: float | None = None
    altitude_m: float = 0.0


@dataclass(frozen=True)
class PvHour:
    start: datetime
    end: datetime
    pv_kw: float  # mean AC power over [start, end)


def pv_forecast(hours: list[WeatherHour], array: PvArray) -> list[PvHour]:
    if not hours:
        return []
    index = pd.DatetimeIndex([h.ts for h in hours])

    def col(values: list[float | None], default: float) -> pd.Series:
        return pd.Series([default if v is None else v for v in values], index=index, dtype=float)

    ghi = col([h.ghi_w_per_m2 for h in hours], 0.0)
    loc = pvlib.location.Location(array.latitude, array.longitude, altitude=array.altitude_m)
    sp = loc.get_solarposition(index - pd.Timedelta(minutes=30))
    sp.index = index
    dni = pd.Series([h.dni_w_per_m2 for h in hours], index=index, dtype=float)
    dhi = pd.Series([h.dhi_w_per_m2 for h in hours], index=index, dtype=float)
    if dni.isna().any() or dhi.isna().any():
        parts = pvlib.irradiance.erbs(ghi, sp["zenith"], index)
        dni = dni.fillna(parts["dni"])
        dhi = dhi.fillna(parts["dhi"])
    poa = pvlib.irradiance.get_total_irradiance(
        array.tilt_deg,
        array.azimuth_deg,
        sp["apparent_zenith"],
        sp["azimuth"],
        dni,
        ghi,
        dhi,
        dni_extra=pvlib.irradiance.get_extra_radiation(index),
        model="haydavies",
    )
    poa_global = poa["poa_global"].fillna(0.0).clip(lower=0.0)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    tcell = pvlib.temperature.sapm_cell(
        poa_global,
        col([h.temperature_c for h in hours], 15.0),
        col([h.wind_speed_m_per_s for h in hours], 1.0),
        **params,
    )
    pdc = pvlib.pvsystem.pvwatts_dc(poa_global, tcell, array.kwp * 1000.0, GAMMA_PDC_PER_C) * (
        1 - array.losses_pct / 100.0
    )
    inverter_w = (array.inverter_kw or array.kwp) * 1000.0
    pac = pvlib.inverter.pvwatts(pdc, inverter_w / INVERTER_ETA_NOM, eta_inv_nom=INVERTER_ETA_NOM)
    kw = np.clip(np.nan_to_num(np.asarray(pac, dtype=float) / 1000.0), 0.0, inverter_w / 1000.0)
    # Night: the sun below the horizon all hour gives no output, whatever a model's rounding says.
    kw[(sp["apparent_zenith"].to_numpy() >= 90.0) & (ghi.to_numpy() <= 0.0)] = 0.0
    return [
        PvHour(h.ts - timedelta(hours=1), h.ts, round(float(v), 4)) for h, v in zip(hours, kw, strict=True)
    ]
