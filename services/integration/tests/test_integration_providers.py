"""The provider HTTP layer against a local scripted server: Retry-After, the breaker, timeouts, the
rate limit shared by two "replicas", and the health every replica sees."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from integration_test_helpers import Reply, ScriptedServer
from redis.asyncio import Redis

from nattery_integration.providers.breaker import BreakerState
from nattery_integration.providers.client import ProviderClients, parse_retry_after
from nattery_integration.providers.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from nattery_integration.providers.ratelimit import RateLimit
from nattery_integration.providers.specs import BreakerPolicy, ProviderSpec, RetryPolicy, Timeouts
from nattery_shared.testing import TEST_REDIS_URL, eventually


def spec_for(server: ScriptedServer, **changes: object) -> ProviderSpec:
    spec = ProviderSpec(
        name="replay",
        title="Replay provider",
        base_url=server.url + "v1/",
        rate_limit=RateLimit(requests=1000, per_s=1, burst=100),
        timeouts=Timeouts(connect_s=1, read_s=2),
        retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05, jitter_s=0.01),
        breaker=BreakerPolicy(failure_threshold=3, open_s=0.5),
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


def clients_for(spec: ProviderSpec, redis: Redis, prefix: str | None = None) -> ProviderClients:
    return ProviderClients(
        {spec.name: spec},
        redis,
        prefix=prefix or f"test-{uuid.uuid4().hex[:8]}:",
        replica=uuid.uuid4().hex[:6],
    )


async def test_paths_are_relative_to_the_base_url_and_the_endpoint_is_a_label(
    scripted: ScriptedServer, redis: Redis
) -> None:
    clients = clients_for(spec_for(scripted), redis)
    response = await clients.get("replay").get(
        "products/X/", params={"a": "1"}, extensions={"endpoint": "products"}
    )
    assert response.status_code == 200
    assert scripted.seen[0].path == "/v1/products/X/?a=1"
    health = await clients.health.read("replay")
    assert health["last_success_endpoint"] == "products"
    await clients.aclose()


async def test_429_with_retry_after_is_waited_for(scripted: ScriptedServer, redis: Redis) -> None:
    scripted.script = [
        Reply(429, {"detail": "slow down"}, headers={"Retry-After": "1"}),
        Reply(200, {"ok": 1}),
    ]
    clients = clients_for(spec_for(scripted), redis)
    response = await clients.get("replay").get("rates", extensions={"endpoint": "rates"})
    assert response.json() == {"ok": 1}
    first, second = scripted.seen
    assert second.at - first.at >= 1.0  # the provider said one second
    await clients.aclose()


async def test_a_retry_after_longer_than_the_policy_is_not_waited_for(
    scripted: ScriptedServer, redis: Redis
) -> None:
    scripted.default = Reply(429, "", headers={"Retry-After": "3600"})
    clients = clients_for(spec_for(scripted), redis)
    with pytest.raises(ProviderRateLimited) as limited:
        await clients.get("replay").get("rates")
    assert limited.value.retry_after_s == 3600
    assert scripted.count() == 1
    await clients.aclose()


def test_retry_after_as_an_http_date() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("7") == 7
    assert parse_retry_after("soon") is None


async def test_a_4xx_is_not_retried_and_says_what_came_back(scripted: ScriptedServer, redis: Redis) -> None:
    scripted.default = Reply(404, {"detail": "No product with code AGILE-XX"})
    clients = clients_for(spec_for(scripted), redis)
    with pytest.raises(ProviderRejected) as rejected:
        await clients.get("replay").get("products/AGILE-XX/", extensions={"endpoint": "products"})
    assert rejected.value.status_code == 404
    assert "AGILE-XX" in rejected.value.excerpt
    assert scripted.count() == 1
    # the same status accepted by the caller is an answer, not an error
    response = await clients.get("replay").get("x", extensions={"accept_status": (404,)})
    assert response.status_code == 404
    assert clients.breaker("replay").state is BreakerState.CLOSED
    await clients.aclose()


async def test_a_burst_of_5xx_opens_the_breaker_then_one_probe_closes_it(
    scripted: ScriptedServer, redis: Redis
) -> None:
    scripted.default = Reply(503, {"error": "overloaded"})
    clients = clients_for(spec_for(scripted), redis)
    client = clients.get("replay")
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await client.get("rates", extensions={"endpoint": "rates"})
    assert scripted.count() == 3  # three attempts, then the breaker opened
    breaker = clients.breaker("replay")
    assert breaker.state is BreakerState.OPEN
    assert (await clients.health.read("replay"))["breaker_state"] == "open"

    with pytest.raises(ProviderUnavailable, match="circuit breaker open"):
        await client.get("rates")
    assert scripted.count() == 3  # nothing left while open

    await eventually(lambda: breaker.state is BreakerState.HALF_OPEN, timeout_s=5, interval_s=0.05)
    scripted.default = Reply(200, {"ok": True}, delay_s=0.3)
    results = await asyncio.gather(client.get("rates"), client.get("rates"), return_exceptions=True)
    answered = [r for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, ProviderUnavailable)]
    assert len(answered) == 1 and len(refused) == 1, results  # one probe; the other waited its turn
    assert scripted.count() == 4
    assert breaker.state is BreakerState.CLOSED
    assert (await clients.health.read("replay"))["breaker_state"] == "closed"
    await client.get("rates")
    assert scripted.count() == 5
    await clients.aclose()


async def test_a_failed_probe_opens_the_breaker_again(scripted: ScriptedServer, redis: Redis) -> None:
    scripted.default = Reply(500)
    clients = clients_for(spec_for(scripted, retry=RetryPolicy(max_attempts=1)), redis)
    client = clients.get("replay")
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            await client.get("rates")
    breaker = clients.breaker("replay")
    assert breaker.state is BreakerState.OPEN
    await eventually(lambda: breaker.state is BreakerState.HALF_OPEN, timeout_s=5, interval_s=0.05)
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        await client.get("rates")  # the probe
    assert breaker.state is BreakerState.OPEN
    assert scripted.count() == 4
    await clients.aclose()


async def test_slow_answers_time_out_and_are_retried(scripted: ScriptedServer, redis: Redis) -> None:
    scripted.default = Reply(200, {"late": True}, delay_s=1.5)
    spec = spec_for(
        scripted,
        timeouts=Timeouts(connect_s=1, read_s=0.2),
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01, jitter_s=0.01),
    )
    clients = clients_for(spec, redis)
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await clients.get("replay").get("rates", extensions={"endpoint": "rates"})
    assert scripted.count() == 2
    health = await clients.health.read("replay")
    assert "timed out" in health["last_error"] and health["last_error_endpoint"] == "rates"
    await clients.aclose()


async def test_two_replicas_never_exceed_the_providers_rate_limit(
    scripted: ScriptedServer, redis: Redis
) -> None:
    limit = RateLimit(requests=10, per_s=0.5, burst=2)
    spec = spec_for(scripted, rate_limit=limit)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    other_redis = Redis.from_url(TEST_REDIS_URL)
    replica_a = clients_for(spec, redis, prefix)
    replica_b = clients_for(spec, other_redis, prefix)  # another process: its own Redis connection
    calls = [c.get("replay").get("rates") for c in (replica_a, replica_b) for _ in range(12)]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses)
    arrivals = sorted(s.at for s in scripted.seen)
    assert len(arrivals) == 24
    # the server's view: no window of per_s seconds holds more than `requests` arrivals
    busiest = max(sum(1 for t in arrivals if start <= t < start + limit.per_s) for start in arrivals)
    assert busiest <= limit.requests, busiest
    assert busiest >= limit.requests - 2  # and the limit was actually reached (the test can fail)
    await replica_a.aclose()
    await replica_b.aclose()
    await other_redis.aclose()


async def test_an_unreachable_provider_is_unavailable(redis: Redis) -> None:
    from nattery_shared.testing import free_port

    spec = ProviderSpec(
        name="gone",
        title="Gone",
        base_url=f"http://127.0.0.1:{free_port()}/",
        rate_limit=RateLimit(requests=100, per_s=1, burst=10),
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01, jitter_s=0.01),
    )
    clients = clients_for(spec, redis)
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        await clients.get("gone").get("x")
    await clients.aclose()
