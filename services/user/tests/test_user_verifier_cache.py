"""The shared TokenVerifier's cache of verified tokens: same answers as a full check, honours expiry
and key removal, stays bounded."""

from __future__ import annotations

from typing import Any

import pytest

from nattery_shared.auth import JwksCache, TokenVerifier
from nattery_shared.errors import Unauthorized
from nattery_shared.testing import SigningKey, TestIssuer


def verifier_for(jwks: dict[str, Any], cache_size: int = 100) -> TokenVerifier:
    async def fetch() -> dict[str, Any]:
        return jwks

    return TokenVerifier(
        JwksCache("local", fetch=fetch, min_refetch_interval_s=0, ttl_s=0.01),
        audience="nattery",
        issuer="nattery-user",
        cache_size=cache_size,
    )


async def test_cache_never_answers_past_exp(test_issuer: TestIssuer) -> None:
    verifier = verifier_for({"keys": [k.jwk() for k in test_issuer.keys]})
    full_checks = 0
    full_verify = verifier._verify

    async def counting(token: str) -> Any:
        nonlocal full_checks
        full_checks += 1
        return await full_verify(token)

    verifier._verify = counting  # type: ignore[method-assign]
    live = test_issuer.token(role="viewer")
    for _ in range(3):
        assert (await verifier.verify(live)).role.value == "viewer"
    assert full_checks == 1  # verified once, then from the cache
    # Expired 2 s ago: inside the full check's 5 s leeway, but the cache must not serve it.
    just_expired = test_issuer.token(role="viewer", expires_in_s=-2)
    await verifier.verify(just_expired)
    await verifier.verify(just_expired)
    assert full_checks == 3
    with pytest.raises(Unauthorized):
        await verifier.verify(test_issuer.token(expires_in_s=-60))


async def test_cached_token_is_refused_once_its_key_leaves_the_jwks(test_issuer: TestIssuer) -> None:
    retiring = SigningKey(kid="retiring")
    jwks = {"keys": [retiring.jwk()]}
    verifier = verifier_for(jwks)
    token = test_issuer.token(key=retiring)
    await verifier.verify(token)
    jwks["keys"] = [k.jwk() for k in test_issuer.keys]  # the key is withdrawn
    await verifier.verify(test_issuer.token())  # a later verify refreshes the key set
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


async def test_cache_is_bounded(test_issuer: TestIssuer) -> None:
    verifier = verifier_for({"keys": [k.jwk() for k in test_issuer.keys]}, cache_size=10)
    for _ in range(25):
        await verifier.verify(test_issuer.token())
    assert len(verifier._verified) == 10
