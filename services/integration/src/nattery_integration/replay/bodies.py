"""Answer bodies in each provider's shape (pure; providers.md §1, §3, §7; providers-2.md §1, §2).

Values are synthetic but plausible (Agile from the bundled recording, see ``agile.py``); field names,
nesting, ordering and time conventions are the providers'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import pandas as pd
import pvlib

LONDON = ZoneInfo("Europe/London")
HALF_HOUR = timedelta(minutes=30)
# entsoe-py QUARTER_MTU_SDAC_GOLIVE: SDAC delivers in 15-minute MTUs from 1 Oct 2025 (Amsterdam).
QUARTER_MTU_FROM = datetime(2025, 9, 30, 22, 0, tzinfo=UTC)


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Octopus -------------------------------------------------------------------------------------


def octopus_rates(
    price: Callable[[datetime], float], start: datetime, end: datetime, until: datetime | None
) -> list[dict[str, Any]]:
    """Half-hourly rates in [start, end) up to ``until`` (unpublished beyond), newest first."""
    t = start.astimezone(UTC)
    t -= timedelta(minutes=t.minute % 30, seconds=t.second, microseconds=t.microsecond)
    out = []
    while t < end and (until is None or t + HALF_HOUR <= until):
        inc = round(price(t), 4)
        out.append(
            {
                "value_exc_vat": round(inc / 1.05, 4),
                "value_inc_vat": inc,
                "valid_from": _z(t),
                "valid_to": _z(t + HALF_HOUR),
                "payment_method": None,
            }
        )
        t += HALF_HOUR
    out.reverse()
    return out


def octopus_page(
    rates: list[dict[str, Any]], page: int, page_size: int, next_url: str | None
) -> dict[str, Any]:
    chunk = rates[(page - 1) * page_size : page * page_size]
    return {"count": len(rates), "next": next_url, "previous": None, "results": chunk}


# --- Elexon / Modo -------------------------------------------------------------------------------


def _niv(start: datetime) -> float:
    h = start.timestamp() / 3600.0
    return round(180.0 * math.sin(h / 3.1) + 60.0 * math.sin(h / 0.7), 3)


def settlement_starts(day: date) -> list[datetime]:
    """UTC starts of a GB settlement day's periods: 46, 48 or 50 (local midnight to midnight)."""
    start = datetime.combine(day, time(0), LONDON).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), LONDON).astimezone(UTC)
    n = int((end - start) / HALF_HOUR)
    return [start + i * HALF_HOUR for i in range(n)]


def elexon_system_prices(day: date, now: datetime) -> dict[str, Any]:
    rows = []
    for sp, start in enumerate(settlement_starts(day), start=1):
        if start + HALF_HOUR > now:
            break  # not settled yet
        niv = _niv(start)
        price = round(80.0 + niv / 6.0, 2)
        rows.append(
            {
                "settlementDate": day.isoformat(),
                "settlementPeriod": sp,
                "startTime": _z(start),
                "createdDateTime": _z(start + timedelta(minutes=44)),
                "systemSellPrice": price,
                "systemBuyPrice": price,
                "bsadDefaulted": False,
                "priceDerivationCode": "N",
                "reserveScarcityPrice": 0.0,
                "netImbalanceVolume": niv,
                "sellPriceAdjustment": 0.0,
                "buyPriceAdjustment": 0.0,
                "replacementPrice": None,
                "replacementPriceReferenceVolume": None,
                "totalAcceptedOfferVolume": 578.0,
                "totalAcceptedBidVolume": -616.25,
                "totalAdjustmentSellVolume": 0.0,
                "totalAdjustmentBuyVolume": 0.0,
                "totalSystemTaggedAcceptedOfferVolume": 578.0,
                "totalSystemTaggedAcceptedBidVolume": -615.25,
                "totalSystemTaggedAdjustmentSellVolume": None,
                "totalSystemTaggedAdjustmentBuyVolume": None,
            }
        )
    return {"metadata": {"datasets": ["DISEBSP"]}, "data": rows}


def modo_niv(day_from: date, day_to: date, now: datetime) -> dict[str, Any]:
    rows = []
    day = day_from
    while day <= day_to:
        for sp, start in enumerate(settlement_starts(day), start=1):
            if start + HALF_HOUR <= now:
                rows.append({"date": day.isoformat(), "settlement_period": sp, "niv": _niv(start)})
        day += timedelta(days=1)
    rows.reverse()  # latest first (the Go client reads results[0] as the latest)
    return {"results": rows}


# --- ENTSO-E -------------------------------------------------------------------------------------

PUBLICATION_NS = "urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3"
ACK_NS = "urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0"


def _entsoe_price(start: datetime, step: timedelta) -> float:
    """EUR/MWh; held flat for an hour in two of three hours, so A03 has positions to omit."""
    hour = start.replace(minute=0) if start.hour % 3 else start
    h = hour.timestamp() / 3600.0
    return round(85.0 + 45.0 * math.sin((hour.hour - 7) / 24 * 2 * math.pi) + 8.0 * math.sin(h / 5.3), 2)


def _iso_min(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def entsoe_publication(eic: str, start: datetime, end: datetime, *, with_sequence_2: bool = False) -> str:
    """One TimeSeries per delivery day (hourly before 1 Oct 2025, 15-minute after), curve type A03."""
    series = []
    day_start = start
    mrid = 1
    while day_start < end:
        day_end = min(day_start + timedelta(days=1), end)
        step = timedelta(minutes=15) if day_start >= QUARTER_MTU_FROM else timedelta(hours=1)
        for seq in ("1", "2") if with_sequence_2 else ("1",):
            res = step if seq == "1" else timedelta(hours=1)
            points = []
            n = int((day_end - day_start) / res)
            previous = None
            for i in range(n):
                value = _entsoe_price(day_start + i * res, res) + (0.0 if seq == "1" else 3.5)
                if value != previous:  # A03: a repeated price is omitted
                    points.append(
                        f"<Point><position>{i + 1}</position><price.amount>{value:.2f}</price.amount></Point>"
                    )
                previous = value
            series.append(
                f"""  <TimeSeries>
    <mRID>{mrid}</mRID>
    <auction.type>A01</auction.type>
    <businessType>A62</businessType>
    <in_Domain.mRID codingScheme="A01">{escape(eic)}</in_Domain.mRID>
    <out_Domain.mRID codingScheme="A01">{escape(eic)}</out_Domain.mRID>
    <contract_MarketAgreement.type>A01</contract_MarketAgreement.type>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <classificationSequence_AttributeInstanceComponent.position>{seq}</classificationSequence_AttributeInstanceComponent.position>
    <curveType>A03</curveType>
    <Period>
      <timeInterval><start>{_iso_min(day_start)}</start><end>{_iso_min(day_end)}</end></timeInterval>
      <resolution>{"PT15M" if res == timedelta(minutes=15) else "PT60M"}</resolution>
      {"".join(points)}
    </Period>
  </TimeSeries>"""
            )
            mrid += 1
        day_start = day_end
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Publication_MarketDocument xmlns="{PUBLICATION_NS}">
  <mRID>replay{int(start.timestamp())}</mRID>
  <revisionNumber>1</revisionNumber>
  <type>A44</type>
  <sender_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</sender_MarketParticipant.mRID>
  <sender_MarketParticipant.marketRole.type>A32</sender_MarketParticipant.marketRole.type>
  <receiver_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</receiver_MarketParticipant.mRID>
  <receiver_MarketParticipant.marketRole.type>A33</receiver_MarketParticipant.marketRole.type>
  <createdDateTime>{_z(datetime.now(UTC))}</createdDateTime>
  <period.timeInterval><start>{_iso_min(start)}</start><end>{_iso_min(end)}</end></period.timeInterval>
{chr(10).join(series)}
</Publication_MarketDocument>
"""


def entsoe_acknowledgement(text: str, code: str = "999") -> str:
    now = _z(datetime.now(UTC))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Acknowledgement_MarketDocument xmlns="{ACK_NS}">
  <mRID>replay-ack</mRID>
  <createdDateTime>{now}</createdDateTime>
  <sender_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</sender_MarketParticipant.mRID>
  <sender_MarketParticipant.marketRole.type>A32</sender_MarketParticipant.marketRole.type>
  <receiver_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</receiver_MarketParticipant.mRID>
  <receiver_MarketParticipant.marketRole.type>A39</receiver_MarketParticipant.marketRole.type>
  <received_MarketDocument.createdDateTime>{now}</received_MarketDocument.createdDateTime>
  <Reason>
    <code>{escape(code)}</code>
    <text>{escape(text)}</text>
  </Reason>
</Acknowledgement_MarketDocument>
"""


# --- Open-Meteo ----------------------------------------------------------------------------------

HOURLY_UNITS = {
    "time": "unixtime",
    "temperature_2m": "°C",
    "cloud_cover": "%",
    "shortwave_radiation": "W/m²",
    "direct_normal_irradiance": "W/m²",
    "diffuse_radiation": "W/m²",
    "wind_speed_10m": "m/s",
}


def open_meteo_forecast(lat: float, lon: float, start_day: date, days: int, unixtime: bool) -> dict[str, Any]:
    """Hourly irradiance (mean of the preceding hour: clear sky at the half hour before, dimmed by a
    synthetic cloud cover, Kasten-Czeplak), temperature, cloud cover and wind, UTC."""
    times = pd.date_range(datetime.combine(start_day, time(0), UTC), periods=24 * days, freq="h")
    loc = pvlib.location.Location(lat, lon)
    clear = loc.get_clearsky(times - pd.Timedelta(minutes=30), model="simplified_solis")
    hours = times.hour.to_numpy() + times.day_of_year.to_numpy() * 24
    cloud = (50 + 45 * pd.Series(hours).apply(lambda h: math.sin(h / 9.0)).to_numpy()).clip(0, 100).round(0)
    dim = 1 - 0.75 * (cloud / 100.0) ** 3.4
    ghi = (clear["ghi"].to_numpy() * dim).round(1)
    dni = (clear["dni"].to_numpy() * dim**2).round(1)
    dhi = (
        (
            ghi
            - dni
            * pd.Series(loc.get_solarposition(times - pd.Timedelta(minutes=30))["zenith"])
            .apply(lambda z: max(0.0, math.cos(math.radians(z))))
            .to_numpy()
        )
        .clip(0)
        .round(1)
    )
    temp = (
        12 + 6 * pd.Series(times.hour).apply(lambda h: math.sin((h - 9) / 24 * 2 * math.pi)).to_numpy()
    ).round(1)
    t_out: list[Any] = (
        [int(t.timestamp()) for t in times] if unixtime else [t.strftime("%Y-%m-%dT%H:%M") for t in times]
    )
    return {
        "latitude": round(lat, 2),
        "longitude": round(lon, 2),
        "generationtime_ms": 0.5,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 30.0,
        "hourly_units": {**HOURLY_UNITS, "time": "unixtime" if unixtime else "iso8601"},
        "hourly": {
            "time": t_out,
            "temperature_2m": temp.tolist(),
            "cloud_cover": cloud.tolist(),
            "shortwave_radiation": ghi.tolist(),
            "direct_normal_irradiance": dni.tolist(),
            "diffuse_radiation": dhi.tolist(),
            "wind_speed_10m": [3.0] * len(times),
        },
    }
