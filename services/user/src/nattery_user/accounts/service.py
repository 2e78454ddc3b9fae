"""Orgs, users and memberships: admins create, change and disable users of their own org."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.errors import UniqueViolation

from nattery_shared.auth import Principal, Role
from nattery_shared.errors import Conflict, Forbidden, NotFound, Unauthorized
from nattery_user.accounts import repository
from nattery_user.accounts.schemas import Me, Member, MembershipOut, UserCreate, UserCreated, UserUpdate
from nattery_user.audit import service as audit
from nattery_user.auth import service as auth
from nattery_user.auth.passwords import check_policy
from nattery_user.deps import UserContext


def generate_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"


def _member(row: dict[str, Any]) -> Member:
    return Member(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        org_id=row["org_id"],
        role=Role(row["role"]),
        disabled=row["disabled"],
        created_at=row["created_at"],
    )


async def create_user(ctx: UserContext, principal: Principal, body: UserCreate) -> UserCreated:
    email = body.email.strip().lower()
    generated = None
    password = body.password
    if password is None:
        password = generated = generate_password()
    check_policy(password, email)
    password_hash = await ctx.passwords.hash(password)
    user_id = uuid.uuid4()
    try:
        async with ctx.pool.connection() as conn, conn.transaction():
            await repository.insert_user(
                conn,
                user_id=user_id,
                email=email,
                display_name=body.display_name,
                password_hash=password_hash,
            )
            await repository.insert_membership(
                conn, org_id=principal.org_id, user_id=user_id, role=body.role.value
            )
            row = await repository.member(conn, principal.org_id, user_id)
    except UniqueViolation as err:
        raise Conflict("a user with this email already exists") from err
    assert row is not None
    await audit.record(
        ctx.pool,
        org_id=principal.org_id,
        actor=principal.subject,
        action="user.created",
        target=f"user:{user_id}",
        details={"email": email, "role": body.role.value},
    )
    return UserCreated(**_member(row).model_dump(), generated_password=generated)


async def list_users(ctx: UserContext, principal: Principal) -> list[Member]:
    async with ctx.pool.connection() as conn:
        return [_member(row) for row in await repository.members(conn, principal.org_id)]


async def get_user(ctx: UserContext, principal: Principal, user_id: uuid.UUID) -> Member:
    async with ctx.pool.connection() as conn:
        row = await repository.member(conn, principal.org_id, user_id)
    if row is None:
        raise NotFound("no such user")
    return _member(row)


async def update_user(ctx: UserContext, principal: Principal, user_id: uuid.UUID, body: UserUpdate) -> Member:
    changes: list[tuple[str, dict[str, Any]]] = []
    async with ctx.pool.connection() as conn, conn.transaction():
        row = await repository.member(conn, principal.org_id, user_id)
        if row is None:
            raise NotFound("no such user")
        is_self = str(user_id) == principal.subject
        if body.role is not None and body.role.value != row["role"]:
            if is_self:
                raise Forbidden("you cannot change your own role")
            await repository.set_role(conn, principal.org_id, user_id, body.role.value)
            changes.append(("user.role_changed", {"from": row["role"], "to": body.role.value}))
        if body.disabled is not None and body.disabled != row["disabled"]:
            if is_self:
                raise Forbidden("you cannot disable yourself")
            await repository.set_disabled(conn, principal.org_id, user_id, body.disabled)
            changes.append(("user.disabled" if body.disabled else "user.enabled", {}))
        if body.display_name is not None and body.display_name != row["display_name"]:
            await repository.set_display_name(conn, user_id, body.display_name)
            changes.append(("user.updated", {"display_name": body.display_name}))
        if await repository.count_active_admins(conn, principal.org_id) == 0:
            raise Conflict("an org keeps at least one active admin")
        row = await repository.member(conn, principal.org_id, user_id)
    assert row is not None
    if any(action in ("user.disabled", "user.role_changed") for action, _ in changes):
        # Refresh carries the new role or refuses the disabled user; access tokens expire within minutes.
        reason = "disabled" if body.disabled else "role_changed"
        await auth.revoke_user_sessions(ctx, user_id, reason=reason, org_id=principal.org_id)
    for action, details in changes:
        await audit.record(
            ctx.pool,
            org_id=principal.org_id,
            actor=principal.subject,
            action=action,
            target=f"user:{user_id}",
            details=details,
        )
    return _member(row)


async def unlock_user(ctx: UserContext, principal: Principal, user_id: uuid.UUID) -> None:
    member = await get_user(ctx, principal, user_id)
    await ctx.limiter.reset_account(member.email)
    await audit.record(
        ctx.pool,
        org_id=principal.org_id,
        actor=principal.subject,
        action="user.unlocked",
        target=f"user:{user_id}",
    )


async def me(ctx: UserContext, principal: Principal) -> Me:
    user_id = uuid.UUID(principal.subject)
    async with ctx.pool.connection() as conn:
        user = await repository.user_by_id(conn, user_id)
        memberships = await repository.active_memberships(conn, user_id)
    if user is None:
        raise NotFound("no such user")
    return Me(
        id=user["id"],
        email=user["email"],
        display_name=user["display_name"],
        org_id=principal.org_id,
        role=principal.role,
        memberships=[MembershipOut.model_validate(m) for m in memberships],
    )


async def change_password(ctx: UserContext, principal: Principal, current: str, new: str) -> None:
    user_id = uuid.UUID(principal.subject)
    async with ctx.pool.connection() as conn:
        user = await repository.user_by_id(conn, user_id)
    if user is None or not await ctx.passwords.verify(user["password_hash"], current):
        raise Unauthorized("current password is wrong")
    check_policy(new, user["email"])
    new_hash = await ctx.passwords.hash(new)
    async with ctx.pool.connection() as conn:
        await repository.set_password_hash(conn, user_id, new_hash)
    await auth.revoke_user_sessions(ctx, user_id, reason="password_changed")
    await audit.record(
        ctx.pool,
        org_id=principal.org_id,
        actor=principal.subject,
        action="user.password_changed",
        target=f"user:{user_id}",
    )


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    org_id: uuid.UUID
    email: str
    password: str | None  # only when created


async def bootstrap_admin(ctx: UserContext, *, org_name: str, email: str) -> BootstrapResult:
    """First admin of the demo org. Idempotent: an existing admin is reported, nothing secret printed."""
    email = email.strip().lower()
    slug = slugify(org_name)
    async with ctx.pool.connection() as conn, conn.transaction():
        await repository.lock_bootstrap(conn)
        org = await repository.org_by_slug(conn, slug)
        org_id = org["id"] if org else uuid.uuid4()
        if org is None:
            await repository.insert_org(conn, org_id=org_id, name=org_name, slug=slug)
        user = await repository.user_by_email(conn, email)
        if user is not None:
            if await repository.member(conn, org_id, user["id"]) is None:
                await repository.insert_membership(
                    conn, org_id=org_id, user_id=user["id"], role=Role.ADMIN.value
                )
            return BootstrapResult(created=False, org_id=org_id, email=email, password=None)
        password = generate_password()
        user_id = uuid.uuid4()
        await repository.insert_user(
            conn,
            user_id=user_id,
            email=email,
            display_name="Admin",
            password_hash=await ctx.passwords.hash(password),
        )
        await repository.insert_membership(conn, org_id=org_id, user_id=user_id, role=Role.ADMIN.value)
    await audit.record(
        ctx.pool,
        org_id=org_id,
        actor="system",
        action="user.created",
        target=f"user:{user_id}",
        details={"email": email, "role": "admin", "via": "bootstrap-admin"},
    )
    return BootstrapResult(created=True, org_id=org_id, email=email, password=password)
