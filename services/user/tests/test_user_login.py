"""Login: tokens and claims, generic failures, disabled users, org choice, audit entries."""

from __future__ import annotations

import httpx
import jwt

from nattery_shared.auth import Role
from nattery_user.deps import UserContext

from .conftest import Org, bearer, fetch_all, login


async def audit_actions(ctx: UserContext, org_id: object) -> list[str]:
    rows = await fetch_all(ctx, "SELECT action FROM audit_log WHERE org_id = %s ORDER BY id", org_id)
    return [row["action"] for row in rows]


async def test_login_gives_rs256_access_token_with_the_contract_claims(
    client: httpx.AsyncClient, org: Org
) -> None:
    body = await login(client, org.operator)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("nrt_")
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"sub", "org", "role", "exp", "iat", "jti", "aud", "iss"} <= set(claims)
    assert claims["sub"] == str(org.operator.id)
    assert claims["org"] == str(org.id)
    assert claims["role"] == "operator"
    assert claims["aud"] == "nattery" and claims["iss"] == "nattery-user"
    assert claims["exp"] - claims["iat"] == 900

    me = await client.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == org.operator.email
    assert me.json()["role"] == "operator"


async def test_wrong_password_and_unknown_email_get_the_same_401(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    wrong = await client.post(
        "/auth/login", json={"email": org.viewer.email, "password": "not-the-password-at-all"}
    )
    unknown = await client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "whatever-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()["error"]["message"] == unknown.json()["error"]["message"] == "invalid email or password"
    )
    assert "auth.login_failed" in await audit_actions(ctx, org.id)


async def test_email_is_case_insensitive(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.post(
        "/auth/login", json={"email": org.viewer.email.upper(), "password": org.viewer.password}
    )
    assert response.status_code == 200


async def test_disabled_user_cannot_log_in_and_loses_sessions(
    client: httpx.AsyncClient, org: Org, ctx: UserContext
) -> None:
    viewer_tokens = await login(client, org.viewer)
    admin = await login(client, org.admin)
    patched = await client.patch(
        f"/users/{org.viewer.id}", json={"disabled": True}, headers=bearer(admin["access_token"])
    )
    assert patched.status_code == 200 and patched.json()["disabled"] is True
    denied = await client.post(
        "/auth/login", json={"email": org.viewer.email, "password": org.viewer.password}
    )
    assert denied.status_code == 401
    refreshed = await client.post("/auth/refresh", json={"refresh_token": viewer_tokens["refresh_token"]})
    assert refreshed.status_code == 401
    assert "user.disabled" in await audit_actions(ctx, org.id)

    enabled = await client.patch(
        f"/users/{org.viewer.id}", json={"disabled": False}, headers=bearer(admin["access_token"])
    )
    assert enabled.status_code == 200
    assert (
        await client.post("/auth/login", json={"email": org.viewer.email, "password": org.viewer.password})
    ).status_code == 200


async def test_login_records_audit_entry(client: httpx.AsyncClient, org: Org, ctx: UserContext) -> None:
    await login(client, org.admin)
    assert "auth.login" in await audit_actions(ctx, org.id)


async def test_role_change_applies_at_next_refresh(client: httpx.AsyncClient, org: Org) -> None:
    admin = await login(client, org.admin)
    await client.patch(
        f"/users/{org.viewer.id}", json={"role": "operator"}, headers=bearer(admin["access_token"])
    )
    # Changing a role revokes the user's sessions; the next login carries the new role.
    body = await login(client, org.viewer)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["role"] == Role.OPERATOR.value
