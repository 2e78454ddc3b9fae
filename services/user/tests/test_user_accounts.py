"""Admins manage their own org's users; nobody sees another org's users; password policy; settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from nattery_user.auth.passwords import policy_violations
from nattery_user.deps import UserContext

from .conftest import Org, bearer, login, unique_email


async def test_admin_creates_lists_and_updates_users(client: httpx.AsyncClient, org: Org) -> None:
    admin = bearer((await login(client, org.admin))["access_token"])
    email = unique_email("new")
    created = await client.post("/users", json={"email": email, "role": "operator"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["role"] == "operator" and body["org_id"] == str(org.id)
    generated = body["generated_password"]
    assert generated and len(generated) >= 20
    assert (await client.post("/auth/login", json={"email": email, "password": generated})).status_code == 200

    listed = (await client.get("/users", headers=admin)).json()
    assert email in {u["email"] for u in listed} and "password_hash" not in listed[0]
    fetched = await client.get(f"/users/{body['id']}", headers=admin)
    assert fetched.status_code == 200 and fetched.json()["email"] == email

    assert (await client.post("/users", json={"email": email}, headers=admin)).status_code == 409
    weak = await client.post(
        "/users", json={"email": unique_email("weak"), "password": "password1234"}, headers=admin
    )
    assert weak.status_code == 422


async def test_admin_cannot_demote_or_disable_themselves(client: httpx.AsyncClient, org: Org) -> None:
    admin = bearer((await login(client, org.admin))["access_token"])
    assert (
        await client.patch(f"/users/{org.admin.id}", json={"role": "viewer"}, headers=admin)
    ).status_code == 403
    assert (
        await client.patch(f"/users/{org.admin.id}", json={"disabled": True}, headers=admin)
    ).status_code == 403


async def test_another_orgs_admin_sees_nothing(
    client: httpx.AsyncClient, org: Org, make_org: Callable[[], Awaitable[Org]]
) -> None:
    other = await make_org()
    intruder = bearer((await login(client, other.admin))["access_token"])
    assert org.viewer.email not in {u["email"] for u in (await client.get("/users", headers=intruder)).json()}
    assert (await client.get(f"/users/{org.viewer.id}", headers=intruder)).status_code == 404
    patched = await client.patch(f"/users/{org.viewer.id}", json={"disabled": True}, headers=intruder)
    assert patched.status_code == 404
    assert (await client.post(f"/users/{org.viewer.id}/unlock", headers=intruder)).status_code == 404


async def test_change_password_checks_the_current_one_and_the_policy(
    client: httpx.AsyncClient, org: Org
) -> None:
    tokens = await login(client, org.viewer)
    headers = bearer(tokens["access_token"])
    wrong = await client.post(
        "/me/password",
        json={"current_password": "nope-nope-nope", "new_password": "Another-Good-Pass-77"},
        headers=headers,
    )
    assert wrong.status_code == 401
    weak = await client.post(
        "/me/password",
        json={"current_password": org.viewer.password, "new_password": "short"},
        headers=headers,
    )
    assert weak.status_code == 422
    ok = await client.post(
        "/me/password",
        json={"current_password": org.viewer.password, "new_password": "Another-Good-Pass-77"},
        headers=headers,
    )
    assert ok.status_code == 204
    # Every session ends with a password change.
    assert (
        await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 401
    assert (
        await client.post("/auth/login", json={"email": org.viewer.email, "password": "Another-Good-Pass-77"})
    ).status_code == 200


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short-1", "at least 12"),
        ("password1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("Summer2025", "at least 12"),
        ("alice.smith-battery", "email"),
        ("aaaaaaaaaaaaaaaa", "different characters"),
    ],
)
def test_password_policy_refuses(password: str, problem: str) -> None:
    assert any(problem in p for p in policy_violations(password, "alice.smith@example.com"))


def test_password_policy_accepts_a_reasonable_passphrase() -> None:
    assert policy_violations("violet-tractor-moonlight", "alice.smith@example.com") == []


async def test_settings_defaults_update_and_validation(client: httpx.AsyncClient, org: Org) -> None:
    headers = bearer((await login(client, org.operator))["access_token"])
    defaults = (await client.get("/me/settings", headers=headers)).json()
    assert defaults["timezone"] == "UTC" and defaults["units"] == "metric"
    assert set(defaults["notifications"]) == {"info", "warning", "critical"}
    new = {"timezone": "Europe/London", "units": "imperial", "notifications": {"critical": ["sms", "push"]}}
    put = await client.put("/me/settings", json=new, headers=headers)
    assert put.status_code == 200, put.text
    got = (await client.get("/me/settings", headers=headers)).json()
    assert got["timezone"] == "Europe/London" and got["units"] == "imperial"
    assert got["notifications"]["critical"] == ["push", "sms"]
    assert got["notifications"]["warning"] == ["email"]  # unspecified severities keep their defaults
    bad = await client.put("/me/settings", json={"timezone": "Mars/Olympus"}, headers=headers)
    assert bad.status_code == 422
    bad_channel = await client.put(
        "/me/settings", json={"notifications": {"info": ["pigeon"]}}, headers=headers
    )
    assert bad_channel.status_code == 422
    # Settings are per user.
    viewer = bearer((await login(client, org.viewer))["access_token"])
    assert (await client.get("/me/settings", headers=viewer)).json()["timezone"] == "UTC"


async def test_password_verification_refuses_overlong_input(ctx: UserContext) -> None:
    stored = await ctx.passwords.hash("x" * 200 + "-Long-Battery-Pass")
    assert await ctx.passwords.verify(stored, "x" * 200 + "-Long-Battery-Pass")
    assert not await ctx.passwords.verify(stored, "x" * 200 + "-Long-Battery-Pass" + "y" * 100)
    assert not await ctx.passwords.verify(None, "anything-at-all")
