"""Auth benchmarks (``make bench-auth``): JSON lines (``bench/common.py``).

The verifier is the shared ``TokenVerifier`` (the dependency every service uses), in one process, with
tokens minted exactly like user-service mints them (RS256, kid, claims, aud, iss):

- ``user.token_verify_cached_per_s``: 2,000 live tokens, each already verified once, presented again
  and again: every call is a cache hit (SHA-256 of the token, a dict look-up, an expiry check).
- ``user.token_verify_uncached_per_s``: the cache off: every call is a full RS256 signature check.
- ``user.token_verify_mix_per_s``: what a service sees: 2,000 clients, each at 10 requests/s, each
  presenting a new token every 15 minutes (the access-token lifetime), rotations spread evenly over
  the 15 minutes. ``--mix-s`` seconds of that request stream (default 60 s: 1.2 M requests, ~133 new
  tokens) are replayed in order as fast as the verifier goes; reported: the achieved verify rate, the
  offered rate (20,000/s) and the cache hit ratio measured in the verifier (misses = RS256 checks).
- ``user.login_p99_ms``: POST /auth/login through the real user-service app (in process, ASGI) against
  the local PostgreSQL and Redis test servers, one client at a time, with the Argon2id parameters in use.

    uv run python bench/auth.py [--only verify|login] [--mix-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from common import emit, note, percentile
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from nattery_shared import migrations
from nattery_shared.auth import JwksCache, Principal, Role, TokenVerifier
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, lock_test_servers, test_settings_kwargs

DISTINCT_TOKENS = 2000
VERIFY_SECONDS = 3.0
LOGINS = 200
CLIENTS = 2000
REQUESTS_PER_CLIENT_PER_S = 10
TOKEN_LIFETIME_S = 15 * 60


def rsa_ceiling_per_s(issuer: TestIssuer, token: str, seconds: float = 1.0) -> float:
    """Signature checks per second with no JWT around them: what an uncached verify cannot beat."""
    signing_input, _, signature_b64 = token.rpartition(".")
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    public = issuer.keys[0].private.public_key()
    n = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            public.verify(signature, signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        n += 100
    return n / (time.perf_counter() - started)


class CountingVerifier(TokenVerifier):
    """The production verifier, counting the full RS256 checks (cache misses)."""

    misses = 0

    async def _verify(self, token: str) -> tuple[Principal, str]:
        self.misses += 1
        return await super()._verify(token)


async def bench_verify(mix_s: float) -> None:
    issuer = TestIssuer()
    try:
        jwks = {"keys": [k.jwk() for k in issuer.keys]}

        async def fetch() -> dict[str, Any]:
            return jwks

        def verifier(cache_size: int) -> CountingVerifier:
            return CountingVerifier(
                JwksCache("local", fetch=fetch),
                audience="nattery",
                issuer="nattery-user",
                cache_size=cache_size,
            )

        org = uuid.uuid4()
        tokens = [issuer.token(role="operator", org=org) for _ in range(DISTINCT_TOKENS)]
        order = random.sample(tokens, len(tokens))  # every token in turn, in a shuffled order
        for cache_size, name, target, reference in (
            (
                10_000,
                "user.token_verify_cached_per_s",
                ">= 20000",
                "the offered load of the mix below (2,000 clients x 10 requests/s = 20,000/s)",
            ),
            (
                0,
                "user.token_verify_uncached_per_s",
                None,
                f"ceiling: the bare RSA-2048 PKCS#1 v1.5 SHA-256 signature check (cryptography/OpenSSL) "
                f"on this machine, {rsa_ceiling_per_s(issuer, tokens[0]):,.0f}/s",
            ),
        ):
            v = verifier(cache_size)
            for token in tokens:  # warm: every token verified once with RS256
                await v.verify(token)
            n = 0
            started = time.perf_counter()
            deadline = started + VERIFY_SECONDS
            while time.perf_counter() < deadline:
                for token in order[:500]:
                    await v.verify(token)
                order = order[500:] + order[:500]
                n += 500
            rate = n / (time.perf_counter() - started)
            emit(
                name, round(rate), "1/s", target=target, reference=reference, distinct_tokens=DISTINCT_TOKENS
            )

        await bench_mix(issuer, org, verifier(10_000), mix_s)
    finally:
        issuer.close()


async def bench_mix(issuer: TestIssuer, org: uuid.UUID, v: CountingVerifier, mix_s: float) -> None:
    """Replay ``mix_s`` seconds of the fleet's request stream, in order, as fast as it goes."""
    tick_s = 1 / REQUESTS_PER_CLIENT_PER_S
    ticks = round(mix_s / tick_s)
    # Client i's tokens turn over at offset_i + k x 15 min; offsets evenly spread over the 15 minutes.
    offsets = [TOKEN_LIFETIME_S * i / CLIENTS for i in range(CLIENTS)]
    rotations: dict[int, list[int]] = {}
    for i, offset in enumerate(offsets):
        if offset < mix_s:
            rotations.setdefault(int(offset / tick_s), []).append(i)
    current = [issuer.token(role="operator", org=org) for _ in range(CLIENTS)]
    fresh = {i: issuer.token(role="operator", org=org) for r in rotations.values() for i in r}
    for token in current:  # steady state: every client's current token already seen
        await v.verify(token)
    v.misses = 0
    note("bench-auth", f"mix: {ticks * CLIENTS:,} requests, {len(fresh)} new tokens")
    requests = 0
    started = time.perf_counter()
    for tick in range(ticks):
        for i in rotations.get(tick, ()):
            current[i] = fresh[i]
        for token in current:
            await v.verify(token)
        requests += CLIENTS
    elapsed = time.perf_counter() - started
    offered = CLIENTS * REQUESTS_PER_CLIENT_PER_S
    emit(
        "user.token_verify_mix_per_s",
        round(requests / elapsed),
        "1/s",
        target=f">= {offered}",
        reference=f"offered: {CLIENTS:,} clients x {REQUESTS_PER_CLIENT_PER_S} requests/s = {offered:,}/s, "
        f"a new token per client every {TOKEN_LIFETIME_S // 60} min",
        offered_per_s=offered,
        cache_hit_ratio=round(1 - v.misses / requests, 6),
        rs256_checks=v.misses,
        requests=requests,
        stream_s=mix_s,
        cpu_share_of_one_core_at_offered_rate=round(offered * elapsed / requests, 3),
    )


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
        # The app's logging setup turned per-request client logging back on: one line per login is noise.
        logging.getLogger("httpx").setLevel(logging.WARNING)
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
        emit(
            "user.login_p99_ms",
            round(percentile(latencies_ms, 99), 2),
            "ms",
            target="<= 250",
            reference="the login budget (no published figure); Argon2id at OWASP's minimum, m=19 MiB t=2 p=1",
            p50_ms=round(percentile(latencies_ms, 50), 2),
            logins=LOGINS,
            argon2id=ctx.passwords.parameters,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("verify", "login"))
    parser.add_argument("--mix-s", type=float, default=60.0)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.only in (None, "verify"):
        await bench_verify(args.mix_s)
    if args.only in (None, "login"):
        lock_test_servers("bench/auth.py")  # uses the nattery_test users schema
        await bench_login()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
