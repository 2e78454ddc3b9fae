"""Brute-force protection: growing back-off per account and per address, then an audited lockout."""

from __future__ import annotations

import httpx

from nattery_shared.testing import eventually
from nattery_user.deps import UserContext

from .conftest import Org, Running, fetch_all


async def attempt(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_account_back_off_grows_then_locks_and_is_audited(
    running: Running, org: Org, ctx: UserContext
) -> None:
    # Settings in conftest: 3 free failures, back-off 0.05 s doubling (max 0.2 s), lockout at 6 for 3 s.
    email = org.viewer.email
    async with running.client() as client:
        for _ in range(3):
            assert (await attempt(client, email, "wrong-password-guess")).status_code == 401
        assert (
            await attempt(client, email, "wrong-password-guess")
        ).status_code == 401  # 4th: back-off starts
        blocked = await attempt(client, email, org.viewer.password)  # even the right password waits
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        for _ in range(2):  # failures 5 and 6, each once its back-off is over (a refused try is not counted)

            async def counted() -> bool:
                response = await attempt(client, email, "wrong-password-guess")
                assert response.status_code in (401, 429), response.text
                return response.status_code == 401

            await eventually(counted, timeout_s=5, interval_s=0.05)
        locked = await attempt(client, email, org.viewer.password)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["Retry-After"]) <= 3
    # Another address is refused too: the lock is on the account.
    async with running.client() as other:
        assert (await attempt(other, email, org.viewer.password)).status_code == 429

    lockouts = "SELECT actor, target, details FROM audit_log WHERE org_id = %s AND action = 'auth.lockout'"
    rows = await fetch_all(ctx, lockouts, org.id)
    assert len(rows) == 1
    assert rows[0]["actor"] == str(org.viewer.id) and rows[0]["details"]["failures"] == 6

    async with running.client() as client:  # the lockout (3 s here) ends by itself

        async def let_in() -> bool:
            response = await attempt(client, email, org.viewer.password)
            assert response.status_code in (200, 429), response.text
            return response.status_code == 200

        await eventually(let_in, timeout_s=10, interval_s=0.2)


async def test_success_resets_the_account_counter(running: Running, org: Org) -> None:
    async with running.client() as client:
        for _ in range(3):
            await attempt(client, org.operator.email, "wrong-password-guess")
        assert (await attempt(client, org.operator.email, org.operator.password)).status_code == 200
        for _ in range(3):  # three free failures again
            assert (await attempt(client, org.operator.email, "wrong-password-guess")).status_code == 401


async def test_admin_can_unlock_an_account(running: Running, org: Org) -> None:
    async with running.client() as client:
        for _ in range(4):
            await attempt(client, org.viewer.email, "wrong-password-guess")
        assert (await attempt(client, org.viewer.email, org.viewer.password)).status_code == 429
        admin = await attempt(client, org.admin.email, org.admin.password)
        token = admin.json()["access_token"]
        unlocked = await client.post(
            f"/users/{org.viewer.id}/unlock", headers={"Authorization": f"Bearer {token}"}
        )
        assert unlocked.status_code == 204
        assert (await attempt(client, org.viewer.email, org.viewer.password)).status_code == 200


async def test_one_address_spraying_many_accounts_is_slowed(running: Running, make_org: object) -> None:
    # 20 free failures per address, then back-off: spraying different emails from one address is stopped.
    async with running.client("192.0.2.77") as client:
        statuses = []
        for i in range(22):
            statuses.append(
                (await attempt(client, f"spray-{i}@example.com", "wrong-password-guess")).status_code
            )
        assert statuses[:21] == [401] * 21
        assert statuses[21] == 429
    async with running.client("192.0.2.78") as elsewhere:  # other addresses are not affected
        assert (await attempt(elsewhere, "spray-x@example.com", "wrong-password-guess")).status_code == 401
