"""Signing-key rotation: new tokens carry the new kid, old tokens stay valid until expiry, old keys leave
the JWKS once every token they signed has expired; private keys are encrypted at rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.exceptions import InvalidTag

from nattery_shared.auth import JwksCache, TokenVerifier
from nattery_user.deps import UserContext
from nattery_user.keys import crypto
from nattery_user.keys.service import RETIRE_MARGIN

from .conftest import Org, fetch_one, login


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verifier_over(client: httpx.AsyncClient) -> TokenVerifier:
    """The shared verifier other services use, fetching this service's JWKS endpoint."""

    async def fetch() -> dict[str, Any]:
        response = await client.get("/.well-known/jwks.json")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    return TokenVerifier(
        JwksCache("http://user/.well-known/jwks.json", fetch=fetch, min_refetch_interval_s=0),
        audience="nattery",
        issuer="nattery-user",
    )


async def test_rotation_without_downtime(client: httpx.AsyncClient, org: Org, ctx: UserContext) -> None:
    verifier = verifier_over(client)
    old_token = (await login(client, org.viewer))["access_token"]
    old_kid = kid_of(old_token)
    assert (await verifier.verify(old_token)).subject == str(org.viewer.id)

    new_kid = await ctx.keyring.rotate(publish_lead_s=0)
    new_token = (await login(client, org.viewer))["access_token"]
    assert kid_of(new_token) == new_kid != old_kid

    jwks = (await client.get("/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert {old_kid, new_kid} <= kids
    assert all(k["kty"] == "RSA" and k["alg"] == "RS256" and "d" not in k for k in jwks["keys"])

    # A verifier that cached the old JWKS meets the new kid and refetches; the old token still verifies.
    assert (await verifier.verify(new_token)).subject == str(org.viewer.id)
    assert (await verifier.verify(old_token)).subject == str(org.viewer.id)

    # The old key leaves the JWKS only after every token it signed has expired.
    old = next(k for k in ctx.keyring._keys if k.kid == old_kid)
    new = next(k for k in ctx.keyring._keys if k.kid == new_kid)
    assert old.retire_after == new.activates_at + timedelta(seconds=900) + RETIRE_MARGIN
    later = {k["kid"] for k in ctx.keyring.jwks(now=old.retire_after + timedelta(seconds=1))["keys"]}
    assert old_kid not in later and new_kid in later


async def test_a_new_key_is_published_before_it_signs(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    current = ctx.keyring.signing_key().kid
    pending = await ctx.keyring.rotate(publish_lead_s=3600)
    assert pending in {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    token = (await login(client, org.viewer))["access_token"]
    assert kid_of(token) == current
    # Put the ring back to a key that signs now, for the other tests.
    await ctx.keyring.rotate(publish_lead_s=0)


async def test_private_keys_are_encrypted_at_rest(ctx: UserContext) -> None:
    kid = ctx.keyring.signing_key().kid
    row = await fetch_one(ctx, "SELECT private_key_encrypted FROM signing_keys WHERE kid = %s", kid)
    blob = bytes(row["private_key_encrypted"])
    assert b"PRIVATE KEY" not in blob and not blob.startswith(b"\x30\x82")  # neither PEM nor DER
    kek = ctx.settings.user.key_encryption_key_bytes()
    assert crypto.decrypt_private_key(blob, kid, kek).key_size == 2048
    with pytest.raises(InvalidTag):  # the kid is authenticated: a row cannot be moved to another kid
        crypto.decrypt_private_key(blob, "another-kid", kek)
    with pytest.raises(InvalidTag):
        crypto.decrypt_private_key(blob, kid, b"\x00" * 32)
