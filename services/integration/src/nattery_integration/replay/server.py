"""The replay HTTP server: one Starlette app, one path prefix per provider, faults on demand.

Behaviours (providers.md §9, providers-2.md §9): Octopus pagination via ``next`` (newest first) and a
day not yet published (rates end at ``octopus_published_until``); Elexon 46/50-period days; Modo's
``X-Token``; ENTSO-E hourly before 1 Oct 2025 and 15-minute after, curve A03 gaps, DE-LU sequences 1
and 2, acknowledgement 999 for GB and unpublished days (200, or 400 with ``ack_status=400``), 401
without a token; Open-Meteo ``timeformat=unixtime``. Faults are queued per provider and consumed one
per request: a status (429 with ``Retry-After``, bursts of 5xx), a malformed body, or a delay.

Control (for tests in other processes): ``POST /_replay/faults`` ``{"provider", "faults": [...]}``,
``POST /_replay/octopus`` ``{"published_until": iso | null, "overrides": {iso: p}}``,
``GET /_replay/stats`` (requests per provider, and per provider per second).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time as clock
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nattery_integration.replay import agile, bodies

log = logging.getLogger("nattery.replay")

BASE_PATHS = {
    "octopus": "/octopus/v1",
    "elexon": "/elexon/bmrs/api/v1",
    "modo": "/modo/pub/v1",
    "entsoe": "/entsoe",
    "open_meteo": "/open-meteo/v1",
}
REPLAY_HEADER = "X-Nattery-Replay"
LABEL = "replay: recorded shapes, synthetic or bundled values; not live provider data"


@dataclass
class Fault:
    """``status``: answer that code (``retry_after_s`` adds the header); ``malformed``: a 200 whose body
    does not parse; ``delay_s``: wait first (a slow answer), then answer normally."""

    status: int | None = None
    retry_after_s: int | None = None
    malformed: bool = False
    delay_s: float = 0.0

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Fault:
        return cls(
            status=raw.get("status"),
            retry_after_s=raw.get("retry_after_s"),
            malformed=bool(raw.get("malformed", False)),
            delay_s=float(raw.get("delay_s", 0.0)),
        )


def default_published_until(now: datetime) -> datetime:
    """Agile day-ahead: published around 16:00 UK for the day to 23:00 UK the next day."""
    local = now.astimezone(bodies.LONDON)
    day = local.date() + timedelta(days=1 if local.time() >= time(16, 0) else 0)
    return datetime.combine(day, time(23, 0), bodies.LONDON).astimezone(UTC)


@dataclass
class ReplayState:
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    per_second: dict[str, Counter[int]] = field(default_factory=dict)
    # None: as the real publication would be at this moment (default_published_until)
    octopus_published_until: datetime | None = None
    octopus_overrides: dict[tuple[str, datetime], float] = field(default_factory=dict)  # (direction, start)
    entsoe_published_until: datetime | None = None  # None: everything up to tomorrow's end
    ack_status: int = 200
    # API keys received, per provider (Modo's X-Token, ENTSO-E's securityToken): key -> requests
    credentials: dict[str, Counter[str]] = field(default_factory=dict)
    # Modo keys it accepts (401 for any other); None: any non-empty key
    modo_keys: set[str] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_faults(self, provider: str, *faults: Fault) -> None:
        with self.lock:
            self.faults.setdefault(provider, deque()).extend(faults)

    def next_fault(self, provider: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(provider)
            return queue.popleft() if queue else None

    def saw_key(self, provider: str, key: str) -> None:
        with self.lock:
            self.credentials.setdefault(provider, Counter())[key] += 1

    def count(self, provider: str) -> None:
        with self.lock:
            self.requests[provider] += 1
            self.per_second.setdefault(provider, Counter())[int(clock.time())] += 1

    def octopus_until(self) -> datetime:
        return self.octopus_published_until or default_published_until(self.now())

    def octopus_price(self, direction: str) -> Callable[[datetime], float]:
        base = agile.import_price if direction == "import" else agile.export_price

        def price(start: datetime) -> float:
            return self.octopus_overrides.get((direction, start), base(start))

        return price


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={REPLAY_HEADER: LABEL, **(headers or {})})


def _xml(body: str, status: int = 200, filename: str = "acknowledgement.xml") -> Response:
    return Response(
        body,
        status_code=status,
        media_type="text/xml",
        headers={REPLAY_HEADER: LABEL, "content-disposition": f'inline; filename="{filename}"'},
    )


async def _fault_response(state: ReplayState, provider: str) -> Response | None:
    state.count(provider)
    fault = state.next_fault(provider)
    if fault is None:
        return None
    if fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    if fault.status is not None:
        headers = {REPLAY_HEADER: LABEL}
        if fault.retry_after_s is not None:
            headers["Retry-After"] = str(fault.retry_after_s)
        text = "TOO MANY REQUESTS" if fault.status == 429 else "Service Unavailable"
        return Response(text, status_code=fault.status, headers=headers)
    if fault.malformed:
        if provider == "entsoe":
            return _xml('<?xml version="1.0"?><Publication_MarketDocument><TimeSeries><Period>', 200)
        return Response(
            '{"count": 96, "results": [{"value_inc_vat": 1',
            200,
            media_type="application/json",
            headers={REPLAY_HEADER: LABEL},
        )
    return None


def _utc(value: str) -> datetime:
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=bodies.LONDON)).astimezone(UTC)


def create_replay_app(state: ReplayState | None = None) -> Starlette:
    state = state or ReplayState()

    async def octopus_rates(request: Request) -> Response:
        if (r := await _fault_response(state, "octopus")) is not None:
            return r
        product = request.path_params["product"]
        tariff = request.path_params["tariff"]
        region = tariff.rsplit("-", 1)[-1]
        if tariff != f"E-1R-{product}-{region}" or len(region) != 1:
            return _json({"detail": "No ElectricityTariff matches the given query."}, 404)
        q = request.query_params
        now = state.now()
        start = _utc(q["period_from"]) if "period_from" in q else now - timedelta(days=1)
        end = _utc(q["period_to"]) if "period_to" in q else start + timedelta(days=3)
        page_size = min(1500, max(1, int(q.get("page_size", "100"))))
        page = max(1, int(q.get("page", "1")))
        direction = "export" if "OUTGOING" in product else "import"
        rates = bodies.octopus_rates(state.octopus_price(direction), start, end, state.octopus_until())
        next_url = None
        if page * page_size < len(rates):
            next_url = str(request.url.include_query_params(page=page + 1))
        if rates and page == 1:
            log.info("octopus replay %s %s: %s", product, region, agile.describe(start.date()))
        return _json(
            bodies.octopus_page(rates, page, page_size, next_url),
            headers={REPLAY_HEADER: f"{LABEL}; {agile.describe(start.astimezone(bodies.LONDON).date())}"},
        )

    async def elexon_system_prices(request: Request) -> Response:
        if (r := await _fault_response(state, "elexon")) is not None:
            return r
        try:
            day = date.fromisoformat(request.path_params["day"])
        except ValueError:
            return _json({"status": 400, "errors": {"settlementDate": ["The value is not valid."]}}, 400)
        return _json(bodies.elexon_system_prices(day, state.now()))

    async def modo_niv(request: Request) -> Response:
        if (r := await _fault_response(state, "modo")) is not None:
            return r
        key = request.headers.get("X-Token")
        if not key:
            return _json({"detail": "Authentication credentials were not provided."}, 401)
        state.saw_key("modo", key)
        if state.modo_keys is not None and key not in state.modo_keys:
            return _json({"detail": "Invalid token."}, 401)
        q = request.query_params
        try:
            d0, d1 = date.fromisoformat(q["date_from"]), date.fromisoformat(q["date_to"])
        except (KeyError, ValueError):
            return _json({"detail": "date_from and date_to (YYYY-MM-DD) are required"}, 400)
        return _json(bodies.modo_niv(d0, d1, state.now()))

    async def entsoe_api(request: Request) -> Response:
        if (r := await _fault_response(state, "entsoe")) is not None:
            return r
        q = request.query_params
        if not q.get("securityToken"):
            return Response("Unauthorized", status_code=401, headers={REPLAY_HEADER: LABEL})
        state.saw_key("entsoe", q["securityToken"])
        try:
            start = datetime.strptime(q["periodStart"], "%Y%m%d%H%M").replace(tzinfo=UTC)
            end = datetime.strptime(q["periodEnd"], "%Y%m%d%H%M").replace(tzinfo=UTC)
            eic = q["in_Domain"]
            assert q.get("documentType") == "A44" and q.get("out_Domain") == eic
        except (KeyError, ValueError, AssertionError):
            return _xml(bodies.entsoe_acknowledgement("Check you request against dependency tables"), 400)
        no_data = bodies.entsoe_acknowledgement(
            f"No matching data found for Data item ENERGY_PRICES [12.1.D] ({eic}, {eic}) and interval "
            f"{start:%Y-%m-%dT%H:%M:00.000Z}/{end:%Y-%m-%dT%H:%M:00.000Z}."
        )
        until = state.entsoe_published_until or (
            datetime.combine(state.now().date() + timedelta(days=2), time(0), UTC)
        )
        if eic == "10YGB----------A" or start >= until:
            return _xml(no_data, state.ack_status)
        end = min(end, until)
        body = bodies.entsoe_publication(eic, start, end, with_sequence_2=eic == "10Y1001A1001A82H")
        return _xml(body, 200, filename=f"Energy_Prices_{q['periodStart']}-{q['periodEnd']}.xml")

    async def open_meteo_forecast(request: Request) -> Response:
        if (r := await _fault_response(state, "open_meteo")) is not None:
            return r
        q = request.query_params
        try:
            lat, lon = float(q["latitude"]), float(q["longitude"])
            days = int(q.get("forecast_days", "3"))
            assert -90 <= lat <= 90 and -180 <= lon <= 180 and 1 <= days <= 16
        except (KeyError, ValueError, AssertionError):
            return _json({"error": True, "reason": "Parameter latitude/longitude/forecast_days invalid"}, 400)
        body = bodies.open_meteo_forecast(
            lat, lon, state.now().date(), days, q.get("timeformat") == "unixtime"
        )
        return _json(body)

    async def control_faults(request: Request) -> Response:
        raw = await request.json()
        state.add_faults(raw["provider"], *(Fault.of(f) for f in raw.get("faults", [])))
        return _json({"ok": True})

    async def control_octopus(request: Request) -> Response:
        raw = await request.json()
        if "published_until" in raw:
            state.octopus_published_until = _utc(raw["published_until"]) if raw["published_until"] else None
        for direction_start, value in raw.get("overrides", {}).items():
            direction, start = direction_start.split("@", 1)
            state.octopus_overrides[(direction, _utc(start))] = float(value)
        return _json({"ok": True})

    async def control_stats(_: Request) -> Response:
        with state.lock:
            return _json(
                {
                    "requests": dict(state.requests),
                    "max_per_second": {p: max(c.values(), default=0) for p, c in state.per_second.items()},
                }
            )

    b = BASE_PATHS
    app = Starlette(
        routes=[
            Route(
                b["octopus"] + "/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/",
                octopus_rates,
            ),
            Route(b["elexon"] + "/balancing/settlement/system-prices/{day}", elexon_system_prices),
            Route(b["modo"] + "/gb/modo/markets/niv-live", modo_niv),
            Route(b["entsoe"] + "/api", entsoe_api),
            Route(b["open_meteo"] + "/forecast", open_meteo_forecast),
            Route("/_replay/faults", control_faults, methods=["POST"]),
            Route("/_replay/octopus", control_octopus, methods=["POST"]),
            Route("/_replay/stats", control_stats),
        ]
    )
    app.state.replay = state
    return app
