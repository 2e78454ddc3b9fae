"""One HTTP client per provider, built once in the lifespan: ``clients.get("octopus")`` is an
``httpx.AsyncClient`` with the provider's base URL whose transport does, for every request:

1. the circuit breaker (open: :class:`ProviderUnavailable` at once, no request leaves);
2. a token from the provider's rate limit, shared across replicas (Redis token bucket);
3. the request, with the provider's timeouts;
4. retries with jittered exponential back-off on timeouts, connection errors, 5xx and 429, a 429's
   ``Retry-After`` honoured (longer than the policy's ``max_retry_after_s``: ProviderRateLimited);
5. metrics per provider and endpoint, and the shared health (last success / last error / breaker).

Connectors name the endpoint for the metrics with a request extension (``endpoint``), may accept
statuses that are answers for them rather than errors (``accept_status``, e.g. ENTSO-E's 400 "no
matching data"), and may wait less for a rate-limit token than the provider's default
(``max_rate_wait_s``, e.g. a user waiting on a connection test):

    response = await clients.get("octopus").get(
        f"products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/",
        params={"page_size": 1500},
        extensions={"endpoint": "unit_rates", "accept_status": (404,)},
    )

What a connector sees: a 2xx (or accepted) ``httpx.Response``, or one of ``providers.errors``:
``ProviderUnavailable`` / ``ProviderRateLimited`` / ``ProviderRejected`` (4xx, with status and excerpt).
Parsing is the connector's: a body that does not validate is its ``ProviderDataInvalid``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from nattery_integration.providers.breaker import BreakerOpen, BreakerState, CircuitBreaker
from nattery_integration.providers.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from nattery_integration.providers.health import ProviderHealth
from nattery_integration.providers.ratelimit import RateLimitWaitTooLong, RedisTokenBucket
from nattery_integration.providers.specs import ProviderSpec
from nattery_shared.retry import parse_retry_after

log = logging.getLogger(__name__)

USER_AGENT = "Nattery/0.1 (battery fleet platform)"

PROVIDER_REQUESTS = Counter(
    "nattery_provider_requests_total",
    "Attempts made to third-party providers, by outcome "
    "(ok, client_error, server_error, rate_limited, timeout, transport_error, breaker_open, throttled)",
    ["provider", "endpoint", "outcome"],
)
PROVIDER_LATENCY = Histogram(
    "nattery_provider_request_seconds",
    "Latency of one attempt to a provider (answers and timeouts)",
    ["provider", "endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
)
PROVIDER_BREAKER = Gauge(
    "nattery_provider_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["provider"]
)
PROVIDER_LAST_SUCCESS = Gauge(
    "nattery_provider_last_success_timestamp_seconds",
    "Unix time of the last successful answer",
    ["provider", "endpoint"],
)
PROVIDER_RATE_WAIT = Histogram(
    "nattery_provider_rate_limit_wait_seconds",
    "Time spent waiting for a rate-limit token",
    ["provider"],
    buckets=(0, 0.05, 0.25, 1, 5, 30, 120),
)


class _Retryable(Exception):
    """An attempt failed in a way worth another attempt; ``final`` is raised when none are left."""

    def __init__(self, final: ProviderError, retry_after_s: float | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.retry_after_s = retry_after_s


class ProviderTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        spec: ProviderSpec,
        *,
        bucket: RedisTokenBucket,
        breaker: CircuitBreaker,
        health: ProviderHealth,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.bucket = bucket
        self.breaker = breaker
        self.health = health
        self._inner = inner or httpx.AsyncHTTPTransport(retries=0)
        self._breaker_seen = breaker.state
        PROVIDER_BREAKER.labels(spec.name).set(self._breaker_seen.gauge)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _wait(self, state: RetryCallState) -> float:
        policy = self.spec.retry
        backoff = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** (state.attempt_number - 1))
        backoff += random.uniform(0, policy.jitter_s)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            # The provider said when: wait that long (plus a little jitter so replicas do not stampede).
            return float(exc.retry_after_s) + random.uniform(0, policy.jitter_s)
        return float(backoff)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = str(request.extensions.get("endpoint", "other"))
        accept = frozenset(int(s) for s in request.extensions.get("accept_status", ()))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.spec.retry.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request, endpoint, accept)
        except _Retryable as err:
            await self._breaker_changed()
            raise err.final from err
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(self, request: httpx.Request, endpoint: str, accept: frozenset[int]) -> httpx.Response:
        name = self.spec.name
        try:
            self.breaker.before_call()
        except BreakerOpen as err:
            PROVIDER_REQUESTS.labels(name, endpoint, "breaker_open").inc()
            await self._breaker_changed()
            raise ProviderUnavailable(name, str(err), endpoint=endpoint) from err
        try:
            max_wait = request.extensions.get("max_rate_wait_s")
            waited = await self.bucket.acquire(None if max_wait is None else float(max_wait))
        except RateLimitWaitTooLong as err:
            self.breaker.release()
            PROVIDER_REQUESTS.labels(name, endpoint, "throttled").inc()
            raise ProviderRateLimited(
                name,
                f"our shared rate limit is exhausted ({err})",
                retry_after_s=err.wait_s,
                endpoint=endpoint,
            ) from err
        except (RedisError, OSError) as err:
            self.breaker.release()
            raise ProviderUnavailable(
                name, f"rate limiter (redis) unreachable: {err}", endpoint=endpoint
            ) from err
        except BaseException:
            self.breaker.release()
            raise
        PROVIDER_RATE_WAIT.labels(name).observe(waited)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TimeoutException as err:
            PROVIDER_LATENCY.labels(name, endpoint).observe(time.perf_counter() - started)
            await self._failed(endpoint, "timeout", f"timed out ({type(err).__name__})")
            raise _Retryable(
                ProviderUnavailable(name, f"timed out ({type(err).__name__})", endpoint=endpoint)
            ) from err
        except httpx.TransportError as err:
            await self._failed(endpoint, "transport_error", f"cannot connect: {err!r}")
            raise _Retryable(
                ProviderUnavailable(name, f"cannot connect: {err!r}", endpoint=endpoint)
            ) from err
        except BaseException:
            self.breaker.release()
            raise
        status = response.status_code
        if status < 400 or status in accept:
            PROVIDER_LATENCY.labels(name, endpoint).observe(time.perf_counter() - started)
            self.breaker.success()
            PROVIDER_REQUESTS.labels(name, endpoint, "ok").inc()
            PROVIDER_LAST_SUCCESS.labels(name, endpoint).set(time.time())
            await self.health.success(name, endpoint)
            await self._breaker_changed()
            return response
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        PROVIDER_LATENCY.labels(name, endpoint).observe(time.perf_counter() - started)
        if status == 429:
            # The provider is up; it is us who are too fast. Not a breaker failure.
            self.breaker.success()
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            PROVIDER_REQUESTS.labels(name, endpoint, "rate_limited").inc()
            await self.health.error(name, endpoint, f"HTTP 429 (Retry-After {retry_after})")
            limited = ProviderRateLimited(
                name,
                f"HTTP 429, Retry-After {retry_after if retry_after is not None else 'not given'}",
                retry_after_s=retry_after if retry_after is not None else self.spec.retry.backoff_max_s,
                endpoint=endpoint,
            )
            if retry_after is not None and retry_after > self.spec.retry.max_retry_after_s:
                raise limited
            raise _Retryable(limited, retry_after_s=retry_after)
        if status >= 500:
            await self._failed(endpoint, "server_error", f"HTTP {status}")
            raise _Retryable(ProviderUnavailable(name, f"HTTP {status}", endpoint=endpoint))
        self.breaker.success()  # a 4xx is an answer: the provider is up
        PROVIDER_REQUESTS.labels(name, endpoint, "client_error").inc()
        rejected = ProviderRejected(
            name, status, body, endpoint=endpoint, url=str(request.url.copy_with(query=None))
        )
        await self.health.error(name, endpoint, rejected.message)
        await self._breaker_changed()
        raise rejected

    async def _failed(self, endpoint: str, outcome: str, message: str) -> None:
        self.breaker.failure()
        PROVIDER_REQUESTS.labels(self.spec.name, endpoint, outcome).inc()
        await self.health.error(self.spec.name, endpoint, message)
        await self._breaker_changed()

    async def _breaker_changed(self) -> None:
        state = self.breaker.state
        if state is not self._breaker_seen:
            if state is BreakerState.OPEN:
                log.warning("%s: circuit breaker open for %.0f s", self.spec.name, self.breaker.open_s)
            elif state is BreakerState.CLOSED:
                log.info("%s: circuit breaker closed again", self.spec.name)
            self._breaker_seen = state
            PROVIDER_BREAKER.labels(self.spec.name).set(state.gauge)
            await self.health.breaker(self.spec.name, state.value)


class ProviderClients:
    """Every provider's client, built once in the lifespan. ``get(name)`` -> ``httpx.AsyncClient``."""

    def __init__(
        self,
        specs: Mapping[str, ProviderSpec],
        redis: Redis,
        *,
        prefix: str = "nattery:integration:",
        replica: str = "local",
        inner: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.health = ProviderHealth(redis, prefix=prefix, replica=replica)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._transports: dict[str, ProviderTransport] = {}
        for name, spec in self.specs.items():
            transport = ProviderTransport(
                spec,
                bucket=RedisTokenBucket(
                    redis, f"{prefix}ratelimit:{name}", spec.rate_limit, max_wait_s=spec.max_rate_wait_s
                ),
                breaker=CircuitBreaker(
                    failure_threshold=spec.breaker.failure_threshold, open_s=spec.breaker.open_s
                ),
                health=self.health,
                inner=(inner or {}).get(name),
            )
            t = spec.timeouts
            self._transports[name] = transport
            self._clients[name] = httpx.AsyncClient(
                base_url=spec.base_url,
                transport=transport,
                timeout=httpx.Timeout(t.read_s, connect=t.connect_s, write=t.write_s, pool=t.pool_s),
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
            )

    def get(self, name: str) -> httpx.AsyncClient:
        try:
            return self._clients[name]
        except KeyError:
            raise KeyError(f"unknown provider {name!r}; known: {sorted(self._clients)}") from None

    def breaker(self, name: str) -> CircuitBreaker:
        return self._transports[name].breaker

    def spec(self, name: str) -> ProviderSpec:
        return self.specs[name]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients.values()), return_exceptions=True)

    def __contains__(self, name: object) -> bool:
        return name in self._clients

    def names(self) -> list[str]:
        return list(self._clients)

    def describe(self) -> dict[str, Any]:
        return {n: {"base_url": s.base_url} for n, s in self.specs.items()}
