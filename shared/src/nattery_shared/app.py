"""FastAPI app factory: every service gets the same /healthz, /readyz, /metrics, request ids,
JSON errors and token verification.

A service provides a lifespan that builds its clients once, registers a readiness check for each
dependency it uses, and yields them as lifespan state (handlers reach them as typed dependencies
through ``request.state``; no module-level connections).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nattery_contracts.aio import within
from nattery_shared.auth import build_verifier
from nattery_shared.errors import NatteryError, TooManyRequests
from nattery_shared.logging import configure_logging, new_request_id, request_id_var
from nattery_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[Any]]

HTTP_REQUESTS = Counter("nattery_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("nattery_http_request_seconds", "HTTP request latency", ["method", "route"])


class Readiness:
    """Named dependency checks. /readyz runs them concurrently with a timeout each."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout_s = timeout_s
        self._failing: set[str] = set()

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    @property
    def names(self) -> list[str]:
        return sorted(self._checks)

    async def run(self) -> dict[str, str]:
        async def one(name: str, check: Check) -> tuple[str, str]:
            try:
                await within(check(), self._timeout_s)
            except Exception as err:
                if name not in self._failing:  # log once when it starts failing
                    log.warning("dependency %s not ready: %r", name, err)
                    self._failing.add(name)
                return name, f"failing: {type(err).__name__}: {err}"[:300]
            if name in self._failing:
                log.info("dependency %s ready again", name)
                self._failing.discard(name)
            return name, "ok"

        results = await asyncio.gather(*(one(n, c) for n, c in self._checks.items()))
        return dict(sorted(results))


ServiceLifespan = Callable[[FastAPI, Readiness], AbstractAsyncContextManager[Mapping[str, Any]]]


class RequestContextMiddleware:
    """Request id in and out (``X-Request-ID``), per-route metrics. Pure ASGI: cheap per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                request_id_var.set(_header(scope, b"x-request-id") or new_request_id())
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status_holder["status"])).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)
            request_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            decoded: str = value.decode("latin-1")[:128]
            return decoded
    return None


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    body["error"]["request_id"] = request_id_var.get()
    return body


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "details"?, "request_id"}}``. For 422 the
    details list each invalid field: ``[{"loc": ["body", "name"], "msg": ..., "type": ...}]``."""

    error: ErrorInfo


# Documented on every route of every service (the schema fuzzer fails on an undocumented status).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request"},
    401: {"model": ErrorBody, "description": "Missing, invalid or expired token"},
    403: {"model": ErrorBody, "description": "The token's role may not do this"},
    404: {"model": ErrorBody, "description": "Not found (or another organisation's)"},
    409: {"model": ErrorBody, "description": "Conflicts with the current state"},
    422: {"model": ErrorBody, "description": "Invalid input; details name each field"},
    429: {"model": ErrorBody, "description": "Too many requests; see Retry-After"},
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NatteryError)
    async def nattery_error(_: Request, err: NatteryError) -> JSONResponse:
        headers = {}
        if isinstance(err, TooManyRequests):
            headers["Retry-After"] = str(err.retry_after_s)
        if err.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(
            _error_body(err.code, err.message, err.details), status_code=err.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in err.errors()
        ]
        return JSONResponse(_error_body("validation_error", "request is invalid", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _error_body(f"http_{err.status_code}", str(err.detail)),
            status_code=err.status_code,
            headers=getattr(err, "headers", None),
        )


def create_app(
    *,
    settings: ServiceSettings,
    title: str,
    lifespan: ServiceLifespan,
    routers: Sequence[APIRouter] = (),
    description: str = "",
) -> FastAPI:
    configure_logging(settings.service_name, settings.log_level, environment=settings.environment.value)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        readiness = Readiness()
        verifier = build_verifier(settings.auth)
        async with lifespan(app, readiness) as state:
            yield {"readiness": readiness, "verifier": verifier, "settings": settings, **state}

    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=app_lifespan)
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Every dependency answers", responses={503: {}})
    async def readyz(request: Request) -> JSONResponse:
        readiness: Readiness = request.state.readiness
        checks = await readiness.run()
        failing = [name for name, result in checks.items() if result != "ok"]
        body = {"status": "ready" if not failing else "not_ready", "failing": failing, "checks": checks}
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
