"""Login, refresh rotation with reuse detection, logout, API-token exchange."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from nattery_shared.auth import Role
from nattery_shared.errors import TooManyRequests, Unauthorized
from nattery_user.accounts import repository as accounts
from nattery_user.api_tokens import repository as api_tokens
from nattery_user.audit import service as audit
from nattery_user.auth import repository
from nattery_user.auth.schemas import AccessToken, TokenPair
from nattery_user.auth.tokens import new_refresh_token, session_of_refresh_token, token_hash
from nattery_user.deps import UserContext

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "invalid email or password"


async def login(
    ctx: UserContext,
    *,
    email: str,
    password: str,
    org_id: uuid.UUID | None,
    address: str,
    user_agent: str | None,
) -> TokenPair:
    email = email.strip().lower()
    wait_s = await ctx.limiter.retry_after_s(ctx.limiter.account_key(email), ctx.limiter.address_key(address))
    if wait_s:
        raise TooManyRequests("too many failed logins: try again later", retry_after_s=wait_s)

    async with ctx.pool.connection() as conn:
        user = await accounts.user_by_email(conn, email)
        memberships = await accounts.active_memberships(conn, user["id"]) if user else []
    ok = await ctx.passwords.verify(user["password_hash"] if user else None, password)
    chosen = next((m for m in memberships if org_id is None or m["org_id"] == org_id), None)
    if not ok or user is None or user["disabled_at"] is not None or chosen is None:
        await _login_failed(ctx, email=email, address=address, user=user, memberships=memberships)
        raise Unauthorized(BAD_CREDENTIALS)

    await ctx.limiter.reset_account(email)
    if ctx.passwords.needs_rehash(user["password_hash"]):
        new_hash = await ctx.passwords.hash(password)
        async with ctx.pool.connection() as conn:
            await accounts.set_password_hash(conn, user["id"], new_hash)

    pair = await _open_session(
        ctx,
        user_id=user["id"],
        org_id=chosen["org_id"],
        role=Role(chosen["role"]),
        address=address,
        user_agent=user_agent,
    )
    await audit.record(
        ctx.pool,
        org_id=chosen["org_id"],
        actor=str(user["id"]),
        action="auth.login",
        details={"address": address},
    )
    return pair


async def _login_failed(
    ctx: UserContext,
    *,
    email: str,
    address: str,
    user: dict[str, object] | None,
    memberships: list[dict[str, object]],
) -> None:
    account = await ctx.limiter.fail_account(email)
    by_address = await ctx.limiter.fail_address(address)
    orgs: list[uuid.UUID | None] = [m["org_id"] for m in memberships] or [None]  # type: ignore[misc]
    actor = str(user["id"]) if user else "anonymous"
    details = {"email": email, "address": address, "failures": account.fails}
    for org in orgs:
        await audit.record(ctx.pool, org_id=org, actor=actor, action="auth.login_failed", details=details)
        if account.locked_now:
            await audit.record(
                ctx.pool,
                org_id=org,
                actor=actor,
                action="auth.lockout",
                target=f"account:{email}",
                details={**details, "locked_for_s": round(account.blocked_for_s)},
            )
    if by_address.locked_now:
        log.warning("login lockout for address %s after %d failures", address, by_address.fails)
        await audit.record(
            ctx.pool,
            org_id=None,
            actor="anonymous",
            action="auth.lockout",
            target=f"address:{address}",
            details={"address": address, "failures": by_address.fails},
        )


async def _open_session(
    ctx: UserContext,
    *,
    user_id: uuid.UUID,
    org_id: uuid.UUID,
    role: Role,
    address: str | None,
    user_agent: str | None,
) -> TokenPair:
    session_id = uuid.uuid4()
    refresh = new_refresh_token(session_id)
    refresh_ttl_s = ctx.settings.user.refresh_token_ttl_s
    expires_at = datetime.now(UTC) + timedelta(seconds=refresh_ttl_s)
    async with ctx.pool.connection() as conn:
        await repository.insert_session(
            conn,
            session_id=session_id,
            user_id=user_id,
            org_id=org_id,
            token_hash=token_hash(refresh),
            expires_at=expires_at,
            client_address=address,
            user_agent=user_agent,
        )
    await ctx.sessions.put(
        session_id, user_id=user_id, org_id=org_id, token_hash=token_hash(refresh), expires_at=expires_at
    )
    access = ctx.issuer.issue(user_id=user_id, org_id=org_id, role=role, extra={"sid": str(session_id)})
    return TokenPair(
        access_token=access.token,
        expires_in=access.expires_in_s,
        refresh_token=refresh,
        refresh_expires_in=refresh_ttl_s,
    )


async def refresh(ctx: UserContext, refresh_token: str) -> TokenPair:
    session_id = session_of_refresh_token(refresh_token)
    if session_id is None:
        raise Unauthorized("invalid refresh token")
    old_hash = token_hash(refresh_token)
    new_token = new_refresh_token(session_id)
    new_hash = token_hash(new_token)

    outcome = await ctx.sessions.rotate(session_id, old_hash, new_hash)
    if outcome == -1:  # not in Redis: reload the durable record, then try again once
        async with ctx.pool.connection() as conn:
            row = await repository.live_session(conn, session_id)
        if row is not None:
            await ctx.sessions.put(
                session_id,
                user_id=row["user_id"],
                org_id=row["org_id"],
                token_hash=bytes(row["current_token_hash"]),
                expires_at=row["expires_at"],
            )
            outcome = await ctx.sessions.rotate(session_id, old_hash, new_hash)
    if outcome == 0:
        await _maybe_reuse(ctx, session_id, old_hash)
    if outcome != 1:
        raise Unauthorized("invalid refresh token")

    try:
        async with ctx.pool.connection() as conn, conn.transaction():
            row = await repository.rotate(conn, session_id=session_id, old_hash=old_hash, new_hash=new_hash)
            member = await accounts.member(conn, row["org_id"], row["user_id"]) if row else None
    except Exception:
        await ctx.sessions.rotate(session_id, new_hash, old_hash)  # undo: PostgreSQL is the record
        raise
    if row is None:
        await ctx.sessions.delete(session_id)  # Redis was stale (revoked or expired in PostgreSQL)
        raise Unauthorized("invalid refresh token")
    if member is None or member["disabled"]:
        await revoke_session(ctx, session_id, reason="access_removed")
        raise Unauthorized("account disabled")
    access = ctx.issuer.issue(
        user_id=row["user_id"],
        org_id=row["org_id"],
        role=Role(member["role"]),
        extra={"sid": str(session_id)},
    )
    remaining_s = int((row["expires_at"] - datetime.now(UTC)).total_seconds())
    return TokenPair(
        access_token=access.token,
        expires_in=access.expires_in_s,
        refresh_token=new_token,
        refresh_expires_in=remaining_s,
    )


async def _maybe_reuse(ctx: UserContext, session_id: uuid.UUID, presented_hash: bytes) -> None:
    """A rotated token of this family presented again: someone holds a copy. Revoke the family."""
    async with ctx.pool.connection() as conn:
        reused = await repository.was_issued_in(conn, presented_hash, session_id)
    if not reused:
        return
    row = await revoke_session(ctx, session_id, reason="refresh_token_reuse")
    if row is not None:
        log.warning("refresh token reuse in session %s: family revoked", session_id)
        await audit.record(
            ctx.pool,
            org_id=row["org_id"],
            actor=str(row["user_id"]),
            action="auth.refresh_reuse",
            target=f"session:{session_id}",
        )


async def revoke_session(
    ctx: UserContext, session_id: uuid.UUID, *, reason: str
) -> dict[str, uuid.UUID] | None:
    async with ctx.pool.connection() as conn:
        row = await repository.revoke_session(conn, session_id, reason)
    await ctx.sessions.delete(session_id)
    return row


async def revoke_user_sessions(
    ctx: UserContext, user_id: uuid.UUID, *, reason: str, org_id: uuid.UUID | None = None
) -> int:
    async with ctx.pool.connection() as conn:
        ids = await repository.revoke_user_sessions(conn, user_id, reason, org_id)
    await ctx.sessions.delete(*ids)
    return len(ids)


async def logout(ctx: UserContext, refresh_token: str) -> None:
    """Revoke the session the refresh token belongs to (only its current token can do that)."""
    session_id = session_of_refresh_token(refresh_token)
    if session_id is None:
        return
    async with ctx.pool.connection() as conn:
        row = await repository.live_session(conn, session_id)
    if row is None or bytes(row["current_token_hash"]) != token_hash(refresh_token):
        return
    revoked = await revoke_session(ctx, session_id, reason="logout")
    if revoked is not None:
        await audit.record(
            ctx.pool,
            org_id=revoked["org_id"],
            actor=str(revoked["user_id"]),
            action="auth.logout",
            target=f"session:{session_id}",
        )


async def exchange_api_token(ctx: UserContext, api_token: str, *, address: str) -> AccessToken:
    """An API token buys a short-lived access token, so every service keeps verifying locally."""
    wait_s = await ctx.limiter.retry_after_s(ctx.limiter.address_key(address))
    if wait_s:
        raise TooManyRequests("too many invalid tokens: try again later", retry_after_s=wait_s)
    async with ctx.pool.connection() as conn:
        row = await api_tokens.usable_by_hash(conn, token_hash(api_token))
        member = await accounts.member(conn, row["org_id"], row["user_id"]) if row else None
        if row is not None and member is not None and not member["disabled"]:
            await api_tokens.touch(conn, row["id"])
    if row is None or member is None or member["disabled"]:
        await ctx.limiter.fail_address(address)
        raise Unauthorized("invalid API token")
    # The token never acts above its creator's current role.
    role = min(Role(row["role"]), Role(member["role"]), key=lambda r: r.rank)
    access = ctx.issuer.issue(
        user_id=row["user_id"],
        org_id=row["org_id"],
        role=role,
        max_expires_at=row["expires_at"].timestamp(),
        extra={"tok": str(row["id"])},
    )
    return AccessToken(access_token=access.token, expires_in=access.expires_in_s)
