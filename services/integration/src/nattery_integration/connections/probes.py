"""``POST /connections/{id}/test``: one real call per provider through the plumbing, each result said in
words a user can act on. A provider without a probe of its own gets the generic one (GET its base URL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel

from nattery_integration.connections.schemas import TestCheck
from nattery_integration.providers.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from nattery_integration.providers.specs import EntsoeSettings, OctopusSettings, ProviderSpec

Probe = Callable[[httpx.AsyncClient, ProviderSpec, BaseModel, dict[str, str]], Awaitable[list[TestCheck]]]
EXT = "connection_test"
# A user is waiting: do not queue long behind the jobs for a rate-limit token.
X: dict[str, object] = {"endpoint": EXT, "max_rate_wait_s": 5.0}


def explain(spec: ProviderSpec, err: ProviderError, *, what: str) -> str:
    """A provider error as a sentence that says what to do."""
    if isinstance(err, ProviderRateLimited):
        return f"{spec.title} asks us to slow down (rate limit); try again in {max(1, round(err.retry_after_s))} s."
    if isinstance(err, ProviderUnavailable):
        return (
            f"Could not get an answer from {spec.title} for {what} ({err.message}). The provider may be down "
            f"or unreachable from here; nothing to change in the connection. Try again in a few minutes."
        )
    if isinstance(err, ProviderRejected):
        if err.status_code in (401, 403):
            names = ", ".join(spec.connection.secret_names) or "credentials"
            return (
                f"{spec.title} refused our credentials (HTTP {err.status_code}) for {what}: "
                f"check the {names} in this connection and paste a current one."
            )
        if err.status_code == 404:
            return f"{spec.title} does not know {what} (HTTP 404): check the connection's settings."
        return (
            f"{spec.title} refused {what} (HTTP {err.status_code}: {err.excerpt[:120]}); check the settings."
        )
    return f"{spec.title}: {err.message}"


async def _check(
    name: str, spec: ProviderSpec, what: str, call: Callable[[], Awaitable[httpx.Response]], ok_detail: str
) -> tuple[TestCheck, httpx.Response | None]:
    try:
        response = await call()
    except ProviderError as err:
        return TestCheck(name=name, ok=False, detail=explain(spec, err, what=what)), None
    return TestCheck(name=name, ok=True, detail=ok_detail), response


async def octopus(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    assert isinstance(settings, OctopusSettings)
    checks = []
    for label, code in (
        ("import product", settings.product_code),
        ("export product", settings.export_product_code),
    ):
        if code is None:
            continue
        check, response = await _check(
            label,
            spec,
            f"the product code {code}",
            lambda code=code: client.get(f"products/{code}/", extensions=X),  # type: ignore[misc]
            f"Octopus knows the product {code}.",
        )
        if response is not None:
            body: Any = _json(response)
            tariffs = body.get("single_register_electricity_tariffs") if isinstance(body, dict) else None
            if isinstance(tariffs, dict) and tariffs and f"_{settings.region}" not in tariffs:
                check = TestCheck(
                    name=label,
                    ok=False,
                    detail=f"Octopus's product {code} has no tariff for region {settings.region}: "
                    f"check the region letter (it has {', '.join(sorted(k.lstrip('_') for k in tariffs))}).",
                )
            elif isinstance(tariffs, dict) and tariffs:
                check = TestCheck(
                    name=label,
                    ok=True,
                    detail=f"Octopus has the product {code} for region {settings.region}.",
                )
        checks.append(check)
    if "api_key" in secrets:
        checks.append(
            TestCheck(
                name="api key",
                ok=True,
                detail="The API key is stored; Agile rates are public, so it is only used for account data.",
            )
        )
    return checks


async def elexon(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    check, _ = await _check(
        "system prices",
        spec,
        "yesterday's system prices",
        lambda: client.get(
            f"balancing/settlement/system-prices/{day}",
            params={"format": "json"},
            extensions=X,
        ),
        "Elexon answers system prices.",
    )
    return [check]


async def modo(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    check, _ = await _check(
        "token",
        spec,
        "the live system price",
        lambda: client.get(
            "gb/modo/markets/system-price-live",
            headers={"X-Token": secrets.get("token", "")},
            extensions=X,
        ),
        "Modo accepts the token.",
    )
    return [check]


async def entsoe(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    assert isinstance(settings, EntsoeSettings)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params = {
        "securityToken": secrets.get("security_token", ""),
        "documentType": "A44",
        "in_Domain": settings.bidding_zone,
        "out_Domain": settings.bidding_zone,
        "periodStart": start.strftime("%Y%m%d%H%M"),
        "periodEnd": (start + timedelta(days=1)).strftime("%Y%m%d%H%M"),
    }
    check, response = await _check(
        "security token",
        spec,
        f"day-ahead prices of {settings.bidding_zone}",
        lambda: client.get("api", params=params, extensions={**X, "accept_status": (400,)}),
        "ENTSO-E accepts the security token.",
    )
    if response is not None and response.status_code == 400:
        check = TestCheck(
            name="bidding zone",
            ok=False,
            detail=f"ENTSO-E refused the query for bidding zone {settings.bidding_zone}: "
            "check the zone's EIC code (e.g. 10YNL----------L).",
        )
    return [check]


async def open_meteo(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    check, _ = await _check(
        "forecast",
        spec,
        "a forecast",
        lambda: client.get(
            "forecast",
            params={"latitude": 51.5, "longitude": -0.1, "hourly": "temperature_2m", "forecast_days": 1},
            extensions=X,
        ),
        "Open-Meteo answers forecasts.",
    )
    return [check]


async def generic(
    client: httpx.AsyncClient, spec: ProviderSpec, settings: BaseModel, secrets: dict[str, str]
) -> list[TestCheck]:
    check, _ = await _check(
        "reachable",
        spec,
        "its API",
        lambda: client.get("", extensions=X),
        f"{spec.title} answers.",
    )
    return [check]


PROBES: dict[str, Probe] = {
    "octopus": octopus,
    "elexon": elexon,
    "modo": modo,
    "entsoe": entsoe,
    "open_meteo": open_meteo,
}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
