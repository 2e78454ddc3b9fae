"""User-service fixtures: the real app (PostgreSQL, Redis, RabbitMQ test servers) on an ASGI transport.

Isolation without rollback (the service commits in its own transactions): every test works in orgs and
emails it creates with random names, and this session's Redis keys carry their own prefix.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

import nattery_user
from nattery_shared import migrations
from nattery_shared.auth import Principal, Role
from nattery_shared.testing import TEST_PG_DSN, test_settings_kwargs
from nattery_user.accounts import service as accounts
from nattery_user.accounts.schemas import UserCreate
from nattery_user.app import create_app
from nattery_user.context import SCHEMA
from nattery_user.deps import UserContext
from nattery_user.settings import BruteForceSettings, UserSection, UserSettings

MIGRATIONS = Path(nattery_user.__file__).parent / "migrations"
PASSWORD = "Sunny-Battery-Arbitrage-42"


def user_settings(**section: Any) -> UserSettings:
    brute_force = section.pop(
        "brute_force",
        BruteForceSettings(
            account_free_failures=3,
            account_lockout_failures=6,
            base_delay_s=0.05,
            max_delay_s=0.2,
            lockout_s=3,
            address_free_failures=20,
            address_lockout_failures=40,
        ),
    )
    return UserSettings(
        **test_settings_kwargs(),
        user=UserSection(
            redis_prefix=f"nattery:user:test-{uuid.uuid4().hex[:8]}:",
            signing_key_publish_lead_s=0,
            brute_force=brute_force,
            **section,
        ),
    )


@pytest.fixture(scope="session")
def migrated() -> None:
    migrations.upgrade(MIGRATIONS, TEST_PG_DSN, SCHEMA)


@dataclass
class Running:
    app: FastAPI
    state: dict[str, Any]

    @property
    def ctx(self) -> UserContext:
        ctx: UserContext = self.state["ctx"]
        return ctx

    def client(self, address: str | None = None) -> httpx.AsyncClient:
        address = address or f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://user")


@pytest.fixture(scope="session")
async def running(migrated: None) -> AsyncIterator[Running]:
    app = create_app(user_settings())
    async with LifespanManager(app, startup_timeout=30) as manager:
        yield Running(manager.app, manager._state)  # type: ignore[arg-type]


@pytest.fixture
async def client(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with running.client() as c:
        yield c


@pytest.fixture
def ctx(running: Running) -> UserContext:
    return running.ctx


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str
    role: Role
    org_id: uuid.UUID


@dataclass
class Org:
    id: uuid.UUID
    admin: Account
    operator: Account
    viewer: Account

    def by_role(self, role: Role) -> Account:
        return {Role.ADMIN: self.admin, Role.OPERATOR: self.operator, Role.VIEWER: self.viewer}[role]


async def fetch_all(ctx: UserContext, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(sql.encode(), params)
        return [dict(row) for row in await cur.fetchall()]


async def fetch_one(ctx: UserContext, sql: str, *params: Any) -> dict[str, Any]:
    rows = await fetch_all(ctx, sql, *params)
    assert len(rows) == 1, rows
    return rows[0]


def unique_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def create_org(ctx: UserContext) -> Org:
    admin_email = unique_email("admin")
    boot = await accounts.bootstrap_admin(ctx, org_name=f"Org {uuid.uuid4().hex[:10]}", email=admin_email)
    assert boot.password is not None
    row = await fetch_one(ctx, "SELECT id FROM users WHERE email = %s", admin_email)
    admin = Account(row["id"], admin_email, boot.password, Role.ADMIN, boot.org_id)
    principal = Principal(str(admin.id), boot.org_id, Role.ADMIN, "t", 0)
    members = {}
    for role in (Role.OPERATOR, Role.VIEWER):
        email = unique_email(role.value)
        created = await accounts.create_user(
            ctx, principal, UserCreate(email=email, role=role, password=PASSWORD)
        )
        members[role] = Account(created.id, email, PASSWORD, role, boot.org_id)
    return Org(boot.org_id, admin, members[Role.OPERATOR], members[Role.VIEWER])


@pytest.fixture
async def org(ctx: UserContext) -> Org:
    return await create_org(ctx)


@pytest.fixture
def make_org(ctx: UserContext) -> Callable[[], Awaitable[Org]]:
    return lambda: create_org(ctx)


async def login(client: httpx.AsyncClient, account: Account, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/auth/login", json={"email": account.email, "password": account.password, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
