"""Refresh rotation, reuse detection (the whole family is revoked), logout, Redis as a cache of PostgreSQL."""

from __future__ import annotations

import httpx
import jwt

from nattery_user.auth.tokens import session_of_refresh_token
from nattery_user.deps import UserContext

from .conftest import Org, fetch_one, login


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_the_token_and_keeps_the_session(client: httpx.AsyncClient, org: Org) -> None:
    first = await login(client, org.viewer)
    second = await refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert session_of_refresh_token(body["refresh_token"]) == session_of_refresh_token(first["refresh_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(org.viewer.id) and claims["role"] == "viewer"
    third = await refresh(client, body["refresh_token"])
    assert third.status_code == 200


async def test_reusing_a_rotated_token_revokes_the_whole_family(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    first = await login(client, org.viewer)
    second = (await refresh(client, first["refresh_token"])).json()
    # An attacker (or a confused client) presents the rotated token again.
    reused = await refresh(client, first["refresh_token"])
    assert reused.status_code == 401
    # The legitimate holder's current token is dead too: the family is revoked.
    assert (await refresh(client, second["refresh_token"])).status_code == 401
    sid = session_of_refresh_token(first["refresh_token"])
    row = await fetch_one(ctx, "SELECT revoked_reason FROM sessions WHERE id = %s", sid)
    assert row["revoked_reason"] == "refresh_token_reuse"
    reuse = "SELECT count(*) AS n FROM audit_log WHERE org_id = %s AND action = 'auth.refresh_reuse'"
    assert (await fetch_one(ctx, reuse, org.id))["n"] == 1


async def test_a_forged_token_for_a_session_does_not_revoke_it(client: httpx.AsyncClient, org: Org) -> None:
    first = await login(client, org.viewer)
    sid = session_of_refresh_token(first["refresh_token"])
    assert sid is not None
    forged = f"nrt_{sid.hex}_{'x' * 43}"
    assert (await refresh(client, forged)).status_code == 401
    assert (await refresh(client, first["refresh_token"])).status_code == 200


async def test_garbage_refresh_tokens_get_401(client: httpx.AsyncClient) -> None:
    for token in ["", "nope", "nrt_zz_short", "nrt_" + "0" * 32 + "_" + "a" * 43]:
        assert (await refresh(client, token)).status_code == 401


async def test_logout_revokes_the_session(client: httpx.AsyncClient, org: Org) -> None:
    tokens = await login(client, org.operator)
    response = await client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401
    # Idempotent and silent.
    assert (
        await client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 204


async def test_session_survives_redis_losing_it(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    tokens = await login(client, org.viewer)
    sid = session_of_refresh_token(tokens["refresh_token"])
    assert sid is not None
    await ctx.sessions.delete(sid)  # Redis flushed or evicted: PostgreSQL is the record
    response = await refresh(client, tokens["refresh_token"])
    assert response.status_code == 200
    assert (await refresh(client, response.json()["refresh_token"])).status_code == 200


async def test_revoked_session_stays_revoked_even_if_redis_is_stale(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    tokens = await login(client, org.viewer)
    sid = session_of_refresh_token(tokens["refresh_token"])
    async with ctx.pool.connection() as conn:
        await conn.execute("UPDATE sessions SET revoked_at = now() WHERE id = %s", (sid,))
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401
