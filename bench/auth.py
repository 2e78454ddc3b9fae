"""Auth benchmarks (``make bench-auth``): JSON lines with name, value, unit, target.

- ``user.token_verify_per_s``: access tokens verified per second in one process by the shared
  ``TokenVerifier`` (the dependency every service uses), 2,000 distinct live tokens each presented
  many times, as a service sees them. Also reported: the same without the verified-token cache.
- ``user.login_p99_ms``: POST /auth/login through the real user-service app (in process, ASGI) against
  the local PostgreSQL and Redis test servers, one client at a time, with the Argon2id parameters in use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from nattery_shared import migrations
from nattery_shared.auth import JwksCache, Principal, Role, TokenVerifier
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, lock_test_servers, test_settings_kwargs

DISTINCT_TOKENS = 2000
VERIFY_SECONDS = 3.0
LOGINS = 200


def emit(name: str, value: float, unit: str, target: float | None, **extra: Any) -> None:
    print(
        json.dumps({"name": name, "value": round(value, 2), "unit": unit, "target": target, **extra}),
        flush=True,
    )


async def bench_verify() -> None:
    issuer = TestIssuer()  # mints RS256 tokens exactly like user-service (kid, claims, aud, iss)
    try:
        jwks = {"keys": [k.jwk() for k in issuer.keys]}

        async def fetch() -> dict[str, Any]:
            return jwks

        org = uuid.uuid4()
        tokens = [issuer.token(role="operator", org=org) for _ in range(DISTINCT_TOKENS)]
        for cache_size, name, target in (
            (10_000, "user.token_verify_per_s", 20_000.0),
            (0, "user.token_verify_uncached_per_s", None),
        ):
            verifier = TokenVerifier(
                JwksCache("local", fetch=fetch),
                audience="nattery",
                issuer="nattery-user",
                cache_size=cache_size,
            )
            for token in tokens:  # warm: every token verified once with RS256
                await verifier.verify(token)
            n = 0
            started = time.perf_counter()
            deadline = started + VERIFY_SECONDS
            while time.perf_counter() < deadline:
                for token in random.sample(tokens, 500):
                    await verifier.verify(token)
                n += 500
            rate = n / (time.perf_counter() - started)
            emit(name, rate, "1/s", target, distinct_tokens=DISTINCT_TOKENS)
    finally:
        issuer.close()


async def bench_login() -> None:
    import nattery_user
    from nattery_user.accounts import service as accounts
    from nattery_user.accounts.schemas import UserCreate
    from nattery_user.app import create_app
    from nattery_user.context import SCHEMA
    from nattery_user.settings import UserSection, UserSettings

    migrations.upgrade(Path(nattery_user.__file__).parent / "migrations", TEST_PG_DSN, SCHEMA)
    settings = UserSettings(
        **test_settings_kwargs(),
        user=UserSection(
            redis_prefix=f"nattery:user:bench-{uuid.uuid4().hex[:8]}:", consume_audit_events=False
        ),
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30) as manager:
        ctx = manager._state["ctx"]
        boot = await accounts.bootstrap_admin(
            ctx,
            org_name=f"Bench {uuid.uuid4().hex[:8]}",
            email=f"bench-admin-{uuid.uuid4().hex[:8]}@example.com",
        )
        admin = Principal("bench", boot.org_id, Role.ADMIN, "bench", 0)
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        password = "Bench-Battery-Arbitrage-17"
        await accounts.create_user(ctx, admin, UserCreate(email=email, role=Role.OPERATOR, password=password))
        transport = httpx.ASGITransport(app=manager.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://user") as client:
            latencies_ms = []
            for _ in range(LOGINS):
                started = time.perf_counter()
                response = await client.post("/auth/login", json={"email": email, "password": password})
                latencies_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"login failed: {response.status_code} {response.text}")
        latencies_ms.sort()
        p99 = latencies_ms[int(len(latencies_ms) * 0.99) - 1]
        emit(
            "user.login_p99_ms",
            p99,
            "ms",
            250.0,
            p50_ms=round(statistics.median(latencies_ms), 2),
            logins=LOGINS,
            argon2id=ctx.passwords.parameters,
        )


async def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    lock_test_servers("bench/auth.py")  # uses the nattery_test users schema
    await bench_verify()
    await bench_login()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
