"""Through the real nginx: one token bursting past its own limit gets 429 with Retry-After, while
another token from the same address is still served (limits per address and per token)."""

import asyncio

import httpx

from nattery_shared.testing import own_address_client

GATEWAY = "http://127.0.0.1:8080"
# Proxied (rate-limited) path; the upstream may be down: only 429 or not matters here.
PATH = "/api/integration/readyz"


async def burst(client: httpx.AsyncClient, token: str, n: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    return list(await asyncio.gather(*(client.get(PATH, headers=headers) for _ in range(n))))


async def test_one_token_is_limited_without_starving_another() -> None:
    # From an address of its own, so only the per-token limit can refuse these requests.
    async with own_address_client(GATEWAY, timeout=10) as client:
        noisy = await burst(client, "token-noisy", 26)
        limited = [r for r in noisy if r.status_code == 429]
        assert limited, "a token bursting past 20 requests must be limited"
        assert all(r.headers.get("retry-after") for r in limited)
        quiet = await burst(client, "token-quiet", 5)
        assert [r.status_code for r in quiet if r.status_code == 429] == []
