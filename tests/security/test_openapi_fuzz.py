"""Schema-driven fuzzing (schemathesis) of every service's published OpenAPI document.

Every service of the authorization matrix's world (tests/authz/authz_world.py: device, trading, analytics,
user, integration, each in process against the test servers, with org A's real data) is fuzzed route by
route with an admin token of org A: positive cases (valid by the schema; path ids are org A's real ones
half of the time) and negative cases (violating it). A route fails the test on a 5xx, on a status code
its document does not list, on a response that does not match its documented schema or content type,
or when it accepts (2xx) a request that violates its schema. New routes are fuzzed without a change here.

Bounded: NATTERY_FUZZ_EXAMPLES examples per route and mode (default 20), no shrinking, derandomized so
that a run is reproducible (set NATTERY_FUZZ_SEED to explore other examples).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.generation import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "authz"))
import authz_world
from authz_world import SERVICES, World

from nattery_shared.auth import Role

world = authz_world.world  # the module-scoped fixture

pytestmark = pytest.mark.timeout(600)

EXAMPLES = int(os.environ.get("NATTERY_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("NATTERY_FUZZ_SEED")


def checks() -> list[Any]:
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)


def to_httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis' requests-style transport kwargs as an httpx request."""
    params = [
        (str(key), _query_value(item))
        for key, value in (kwargs.get("params") or {}).items()
        for item in (value if isinstance(value, list) else [value])
    ]
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": {k: str(v) for k, v in (kwargs.get("headers") or {}).items()},
        "params": params,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, bytes | str) else json.dumps(data)
    return request


def fuzz_mode(
    operation: Any,
    mode: GenerationMode,
    *,
    service: str,
    token: str,
    path_parameters: dict[str, str] | None,
    run: Callable[[Coroutine[Any, Any, httpx.Response]], httpx.Response],
    client: httpx.AsyncClient,
) -> str | None:
    """One route in one generation mode; the first finding (no shrinking), or None."""
    label = f"{service} {operation.label} [{mode.value}{', real ids' if path_parameters else ''}]"
    # The bearer token is part of every case (an override: never mutated, so a negative case violates
    # the route's own inputs, not its authentication).
    kwargs: dict[str, Any] = {"generation_mode": mode, "headers": {"Authorization": f"Bearer {token}"}}
    if path_parameters:
        kwargs["path_parameters"] = path_parameters
    strategy = operation.as_strategy(**kwargs)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=strategy)
    def one(case: Any) -> None:
        request = to_httpx(case.as_transport_kwargs(base_url=f"http://{service}"))
        response = run(client.request(**request))
        try:
            case.validate_response(response, checks=checks())
        except Exception as err:
            body = request.get("json", request.get("content"))
            raise AssertionError(
                f"{label} -> {response.status_code}: {str(err).strip()[:600]}\n"
                f"    request: {request['url']} params={request['params']!r:.300} body={body!r:.300}\n"
                f"    response: {response.text[:300]}"
            ) from None

    if SEED is not None:
        one = hypothesis.seed(int(SEED))(one)
    try:
        one()
    except hypothesis.errors.Unsatisfiable:
        return None  # nothing to violate (a route without inputs has no negative cases)
    except AssertionError as err:
        return str(err)
    except Exception as err:  # a generation error is a finding too (an unusable schema)
        return f"{label}: {type(err).__name__}: {err}"[:800]
    return None


def fuzz_operation(operation: Any, *, path_parameters: dict[str, str] | None, **kw: Any) -> list[str]:
    """Runs in a worker thread (hypothesis is synchronous); requests go to the apps' event loop."""
    runs = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
    if path_parameters:
        runs.append((GenerationMode.POSITIVE, path_parameters))
    findings = [fuzz_mode(operation, mode, path_parameters=ids, **kw) for mode, ids in runs]
    return [f for f in findings if f]


@pytest.mark.parametrize("service", SERVICES)
async def test_bad_input_never_reaches_a_server_error(world: World, service: str) -> None:
    svc = world.services[service]
    schema = schemathesis.openapi.from_dict(svc.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service} publishes no operations"
    token = world.token(service, Role.ADMIN, world.org_a)
    loop = asyncio.get_running_loop()

    def run(coro: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    failures: list[str] = []
    for operation in operations:
        path_parameters: dict[str, str] | None = None
        if re.search(r"\{\w+\}", operation.path):
            call = await world.call_for(
                service, operation.method.upper(), operation.path, owner=world.org_a, caller=world.org_a
            )
            path_parameters = dict(call.path) or None
        failures += await asyncio.to_thread(
            fuzz_operation,
            operation,
            service=service,
            token=token,
            path_parameters=path_parameters,
            run=run,
            client=svc.client,
        )
    if service == "device":  # sites the fuzzer provisioned: deleted at the end (and their broker users)
        sites = await svc.client.get(
            "/sites", params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"}
        )
        known = {site_id for _, site_id, _ in world.device_sites}
        world.device_sites += [
            (world.org_a, s["id"], s["slug"]) for s in sites.json() if s["id"] not in known
        ]
    assert not failures, f"{len(failures)} finding(s):\n\n" + "\n\n".join(failures)


# The findings reported from outside (issue 9), each pinned: a 422 that names the field, never a 500.
KNOWN_FINDINGS: list[tuple[str, str, str, dict[str, Any], Any, list[str | int]]] = [
    ("device", "GET", "/sites", {"offset": str(2**63)}, None, ["query", "offset"]),
    ("device", "GET", "/devices", {"offset": str(2**64)}, None, ["query", "offset"]),
    ("device", "PATCH", "/sites/{site_id}", {}, {"name": None}, ["body", "name"]),
    ("device", "PATCH", "/sites/{site_id}", {}, {"name": "a\x00b"}, ["body", "name"]),
    (
        "device",
        "PATCH",
        "/sites/{site_id}",
        {},
        {"safety_limits": {**authz_world.SAFETY_LIMITS, "max_charge_w": float("inf")}},
        ["body", "safety_limits", "max_charge_w"],
    ),
    (
        "trading",
        "POST",
        "/tariffs",
        {},
        {"name": "fixed\x00", "direction": "import", "kind": "fixed", "fixed_p_per_kwh": 20},
        ["body", "name"],
    ),
    (
        "trading",
        "POST",
        "/tariffs",
        {},
        {"name": "huge", "direction": "import", "kind": "fixed", "fixed_p_per_kwh": 1e308},
        ["body", "fixed_p_per_kwh"],
    ),
    (
        "trading",
        "POST",
        "/tariffs",
        {},
        {"name": "nan", "direction": "import", "kind": "fixed", "fixed_p_per_kwh": float("nan")},
        ["body", "fixed_p_per_kwh"],
    ),
    (
        "trading",
        "POST",
        "/tariffs",
        {},
        {
            "name": "inf",
            "direction": "import",
            "kind": "fixed",
            "fixed_p_per_kwh": 20,
            "standing_charge_p_per_day": float("inf"),
        },
        ["body", "standing_charge_p_per_day"],
    ),
    (
        "trading",
        "POST",
        "/tariffs",
        {},
        {
            "name": "tou",
            "direction": "import",
            "kind": "time_of_use",
            "rates": [{"start_local": "00:30+23:59", "end_local": "07:30", "p_per_kwh": 9}],
        },
        ["body", "rates", 0, "start_local"],
    ),
    ("trading", "POST", "/emergency-stops", {}, {"reason": "stop\x00"}, ["body", "reason"]),
    (
        "trading",
        "GET",
        "/sites/{site_id}/schedule/compare",
        {"from": "0.0", "to": "1"},
        None,
        ["query", "from"],
    ),
    ("user", "POST", "/auth/login", {}, {"email": "a\x00@example.com", "password": "x"}, ["body", "email"]),
]


@pytest.mark.parametrize(("service", "method", "path", "query", "body", "loc"), KNOWN_FINDINGS)
async def test_known_findings_answer_422_naming_the_field(
    world: World, service: str, method: str, path: str, query: dict[str, Any], body: Any, loc: list[str | int]
) -> None:
    url = path.replace("{site_id}", world.data[world.org_a].site_id)
    headers = {"Authorization": f"Bearer {world.token(service, Role.ADMIN, world.org_a)}"}
    client = world.services[service].client
    if body is not None:  # Python's JSON (allow_nan) writes NaN/Infinity, as a careless client would
        headers["Content-Type"] = "application/json"
    content = None if body is None else json.dumps(body)
    response = await client.request(method, url, params=query, content=content, headers=headers)
    assert response.status_code == 422, response.text
    assert loc in [d["loc"] for d in response.json()["error"]["details"]], response.text
