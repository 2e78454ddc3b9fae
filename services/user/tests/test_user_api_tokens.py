"""Personal API tokens: shown once, stored hashed, role ≤ creator's, exchanged for access tokens, revocable."""

from __future__ import annotations

import hashlib

import httpx
import jwt

from nattery_user.deps import UserContext

from .conftest import Org, bearer, fetch_one, login


async def create_token(client: httpx.AsyncClient, access: str, **body: object) -> httpx.Response:
    return await client.post("/api-tokens", json={"name": "script", **body}, headers=bearer(access))


async def exchange(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/token", json={"grant_type": "api_token", "api_token": token})


async def test_token_is_shown_once_stored_hashed_and_exchanged(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    access = (await login(client, org.operator))["access_token"]
    created = await create_token(client, access, role="operator", expires_in_days=30)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("nat_") and created.json()["prefix"] == token[:12]

    listed = (await client.get("/api-tokens", headers=bearer(access))).json()
    assert [t["id"] for t in listed] == [created.json()["id"]]
    assert "token" not in listed[0]
    row = await fetch_one(ctx, "SELECT token_hash FROM api_tokens WHERE id = %s", created.json()["id"])
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()

    exchanged = await exchange(client, token)
    assert exchanged.status_code == 200, exchanged.text
    claims = jwt.decode(exchanged.json()["access_token"], options={"verify_signature": False})
    assert (
        claims["role"] == "operator"
        and claims["org"] == str(org.id)
        and claims["sub"] == str(org.operator.id)
    )
    assert claims["tok"] == created.json()["id"]
    assert exchanged.json()["expires_in"] <= 900
    me = await client.get("/me", headers=bearer(exchanged.json()["access_token"]))
    assert me.status_code == 200


async def test_token_role_cannot_exceed_the_creators(client: httpx.AsyncClient, org: Org) -> None:
    access = (await login(client, org.viewer))["access_token"]
    assert (await create_token(client, access, role="operator")).status_code == 403
    assert (await create_token(client, access, role="viewer")).status_code == 201


async def test_demoted_creator_caps_the_tokens_role(client: httpx.AsyncClient, org: Org) -> None:
    operator = (await login(client, org.operator))["access_token"]
    token = (await create_token(client, operator, role="operator")).json()["token"]
    admin = (await login(client, org.admin))["access_token"]
    await client.patch(f"/users/{org.operator.id}", json={"role": "viewer"}, headers=bearer(admin))
    claims = jwt.decode(
        (await exchange(client, token)).json()["access_token"], options={"verify_signature": False}
    )
    assert claims["role"] == "viewer"


async def test_revoked_expired_and_unknown_tokens_are_refused(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    access = (await login(client, org.operator))["access_token"]
    revoked = (await create_token(client, access)).json()
    assert (await client.delete(f"/api-tokens/{revoked['id']}", headers=bearer(access))).status_code == 204
    assert (await exchange(client, revoked["token"])).status_code == 401

    expired = (await create_token(client, access)).json()
    async with ctx.pool.connection() as conn:
        await conn.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s", (expired["id"],)
        )
    assert (await exchange(client, expired["token"])).status_code == 401
    assert (await exchange(client, "nat_" + "x" * 43)).status_code == 401


async def test_other_users_tokens_are_not_visible_or_revocable(
    client: httpx.AsyncClient, org: Org, make_org: object
) -> None:
    operator = (await login(client, org.operator))["access_token"]
    viewer = (await login(client, org.viewer))["access_token"]
    admin = (await login(client, org.admin))["access_token"]
    mine = (await create_token(client, operator)).json()
    assert (await client.get("/api-tokens", headers=bearer(viewer))).json() == []
    assert (await client.delete(f"/api-tokens/{mine['id']}", headers=bearer(viewer))).status_code == 404
    # The org's admin sees and revokes every token of the org.
    assert mine["id"] in {t["id"] for t in (await client.get("/api-tokens", headers=bearer(admin))).json()}
    assert (await client.delete(f"/api-tokens/{mine['id']}", headers=bearer(admin))).status_code == 204
