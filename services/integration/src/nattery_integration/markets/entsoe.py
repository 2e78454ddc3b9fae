"""ENTSO-E Transparency Platform day-ahead prices (A44; providers-2.md §1): pure request/parse code.

The answer is XML: a ``Publication_MarketDocument`` (one TimeSeries/Period per day and resolution,
prices in ``currency_Unit.name`` per ``price_Measure_Unit.name``, normally EUR/MWh) or an
``Acknowledgement_MarketDocument`` carrying a reason (no data, bad parameters), sent with 200 or 400.
Parsed with defusedxml (no entity expansion, no external entities). Curve type A03 omits a position
whose price equals the previous one; the value holds until the next listed position (entsoe-py fill:
``start + (position-1)*resolution``, forward-filled to the period's end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from xml.etree.ElementTree import Element

import httpx
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from nattery_integration.markets.prices import Price, raise_for_status
from nattery_integration.providers.errors import ProviderDataInvalid, ProviderRejected

PROVIDER = "entsoe"
EIC_RE = re.compile(r"^10[XYZTVW][0-9A-Z-]{12}[0-9A-Z-]$")
RESOLUTIONS = {"PT15M": timedelta(minutes=15), "PT30M": timedelta(minutes=30), "PT60M": timedelta(hours=1)}
# Per MWh → per kWh in the minor unit: / 1000 kWh * 100 minor units.
PER_MWH_TO_MINOR_PER_KWH = 0.1

# Bidding zones we name for users (entsoe-py mappings.Area); any EIC is accepted.
ZONES = {
    "DE-LU": "10Y1001A1001A82H",
    "NL": "10YNL----------L",
    "BE": "10YBE----------2",
    "FR": "10YFR-RTE------C",
    "ES": "10YES-REE------0",
    "PT": "10YPT-REN------W",
    "AT": "10YAT-APG------L",
    "IE-SEM": "10Y1001A1001A59C",
    "DK1": "10YDK-1--------W",
    "DK2": "10YDK-2--------M",
    "FI": "10YFI-1--------U",
    "NO1": "10YNO-1--------2",
    "SE3": "10Y1001A1001A46L",
    "GB": "10YGB----------A",  # answers acknowledgement 999 since GB left SDAC: use Octopus/Elexon
}


class Acknowledgement(ProviderRejected):
    """An Acknowledgement_MarketDocument: ENTSO-E refused the request, with reason code(s) and text."""

    def __init__(self, status_code: int, body: bytes, reasons: str) -> None:
        super().__init__(PROVIDER, status_code, body, endpoint="A44")
        self.reasons = reasons
        self.message = f"ENTSO-E refused the request: {reasons}"
        self.args = (f"{PROVIDER}: {self.message}",)


class NoMatchingData(Acknowledgement):
    """Reason "No matching data found": not published (yet) for that zone and day."""


@dataclass(frozen=True)
class Series:
    currency: str
    unit: str  # e.g. MWH
    resolution: timedelta
    sequence: str | None
    prices: list[tuple[datetime, datetime, float]]  # per currency per unit


def zone_eic(zone: str) -> str:
    eic = ZONES.get(zone, zone)
    if not EIC_RE.match(eic):
        raise ValueError(
            f"bidding zone {zone!r}: an EIC code (16 characters, e.g. 10Y1001A1001A82H) or one of {', '.join(ZONES)}"
        )
    return eic


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: Element, name: str) -> Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _children(el: Element, name: str) -> list[Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: Element, name: str) -> str:
    c = _child(el, name)
    if c is None or c.text is None or not c.text.strip():
        raise ProviderDataInvalid(PROVIDER, f"<{_local(el.tag)}> has no <{name}>")
    return c.text.strip()


def _time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise ProviderDataInvalid(PROVIDER, f"time {value!r} is not ISO 8601") from e
    if t.tzinfo is None:
        raise ProviderDataInvalid(PROVIDER, f"time {value!r} has no zone (ENTSO-E times are UTC)")
    return t.astimezone(UTC)


def parse_root(body: bytes) -> Element:
    try:
        root: Element = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as e:
        raise ProviderDataInvalid(PROVIDER, f"the answer is not well-formed XML: {str(e)[:200]}") from e
    return root


def acknowledgement_error(root: Element, status_code: int, body: bytes) -> Acknowledgement:
    """The error an Acknowledgement_MarketDocument stands for, with its reason code(s) and text."""
    parts = []
    for reason in _children(root, "Reason"):
        code, text = _child(reason, "code"), _child(reason, "text")
        parts.append(
            f"reason {(code.text or '?').strip() if code is not None else '?'}: "
            f"{(text.text or '').strip() if text is not None else ''}"
        )
    reasons = "; ".join(parts) or "no reason given"
    if "No matching data found" in reasons:
        return NoMatchingData(status_code, body, reasons)
    return Acknowledgement(status_code, body, reasons)


def parse_period(
    period: Element, curve_type: str
) -> tuple[timedelta, list[tuple[datetime, datetime, float]]]:
    interval = _child(period, "timeInterval")
    if interval is None:
        raise ProviderDataInvalid(PROVIDER, "<Period> has no <timeInterval>")
    start, end = _time(_text(interval, "start")), _time(_text(interval, "end"))
    res_text = _text(period, "resolution")
    step = RESOLUTIONS.get(res_text)
    if step is None:
        raise ProviderDataInvalid(PROVIDER, f"resolution {res_text!r} is not one of {', '.join(RESOLUTIONS)}")
    if end <= start or (end - start) % step:
        raise ProviderDataInvalid(PROVIDER, f"period {start} to {end} is not a whole number of {res_text}")
    n = (end - start) // step
    given: dict[int, float] = {}
    for point in _children(period, "Point"):
        try:
            pos = int(_text(point, "position"))
            given[pos] = float(_text(point, "price.amount"))
        except ValueError as e:
            raise ProviderDataInvalid(PROVIDER, f"a <Point> has a non-numeric position or price: {e}") from e
        if not 1 <= pos <= n:
            raise ProviderDataInvalid(PROVIDER, f"position {pos} outside 1..{n} of a {res_text} period")
    if 1 not in given:
        raise ProviderDataInvalid(PROVIDER, "a period without position 1 cannot be filled")
    if curve_type != "A03" and len(given) != n:
        raise ProviderDataInvalid(PROVIDER, f"curve type {curve_type} with {len(given)} of {n} positions")
    out = []
    value = given[1]
    for i in range(n):
        value = given.get(i + 1, value)  # A03: an omitted position repeats the previous price
        out.append((start + i * step, start + (i + 1) * step, value))
    return step, out


def parse_document(body: bytes, status_code: int = 200) -> list[Series]:
    """Every TimeSeries of a Publication_MarketDocument; the acknowledgement's error if it is one."""
    root = parse_root(body)
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        raise acknowledgement_error(root, status_code, body)
    if kind != "Publication_MarketDocument":
        raise ProviderDataInvalid(PROVIDER, f"unexpected document <{kind}>")
    out = []
    for ts in _children(root, "TimeSeries"):
        currency = _text(ts, "currency_Unit.name")
        unit = _text(ts, "price_Measure_Unit.name")
        curve = _child(ts, "curveType")
        seq = _child(ts, "classificationSequence_AttributeInstanceComponent.position")
        for period in _children(ts, "Period"):
            step, prices = parse_period(period, (curve.text or "A01").strip() if curve is not None else "A01")
            out.append(
                Series(currency, unit, step, (seq.text or "").strip() if seq is not None else None, prices)
            )
    if not out:
        raise ProviderDataInvalid(PROVIDER, "a publication document without any TimeSeries/Period")
    return out


def to_prices(series: list[Series], sequence: str = "1") -> tuple[str, str, list[Price]]:
    """One price per slot (currency, unit, prices). Where several series cover a slot (DE-LU's SDAC
    and EXAA auctions), the series with classification ``sequence`` wins, then the finest resolution."""
    units = {(s.currency, s.unit) for s in series}
    if len(units) != 1:
        raise ProviderDataInvalid(PROVIDER, f"mixed currencies/units in one answer: {sorted(units)}")
    currency, unit = units.pop()
    if unit.upper() != "MWH":
        raise ProviderDataInvalid(PROVIDER, f"price unit {unit!r}; only per MWH is understood")
    ranked = sorted(series, key=lambda s: (s.sequence not in (None, sequence), s.resolution))
    taken: list[Price] = []
    covered: list[tuple[datetime, datetime]] = []
    for s in ranked:
        for start, end, value in s.prices:
            if any(start < e and end > b for b, e in covered):
                continue
            taken.append(Price(start, end, value * PER_MWH_TO_MINOR_PER_KWH, value))
        covered.extend((p[0], p[1]) for p in s.prices)
    taken.sort(key=lambda p: p.start)
    return currency, f"{currency}/MWh", taken


def _period(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d%H%M")


async def fetch_day_ahead(
    client: httpx.AsyncClient, token: str, zone: str, start: datetime, end: datetime
) -> tuple[str, str, list[Price]]:
    """Day-ahead prices of a bidding zone over [start, end) (UTC)."""
    eic = zone_eic(zone)
    try:
        response = await client.get(
            "/api",
            params={
                "securityToken": token,
                "documentType": "A44",
                "in_Domain": eic,
                "out_Domain": eic,
                "periodStart": _period(start),
                "periodEnd": _period(end),
                "contract_MarketAgreement.type": "A01",
            },
            # a 400 carries an acknowledgement (older servers' "no matching data"): parsed below
            extensions={"endpoint": "A44", "accept_status": (400,)},
        )
        raise_for_status(response, PROVIDER)
    except ProviderRejected as e:
        if e.status_code == 401:
            raise ProviderRejected(
                PROVIDER,
                401,
                b"the security token was refused: check the connection's ENTSO-E token",
                endpoint="A44",
            ) from e
        if e.status_code == 400 and e.body.lstrip().startswith(b"<"):
            root = parse_root(e.body)  # older servers send the acknowledgement with 400
            if _local(root.tag) == "Acknowledgement_MarketDocument":
                raise acknowledgement_error(root, 400, e.body) from e
        raise
    return to_prices(parse_document(response.content))
