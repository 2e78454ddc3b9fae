"""Personal API tokens: scoped to a role no higher than the creator's, expiring, revocable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from nattery_shared.auth import Principal, Role
from nattery_shared.errors import Forbidden, NotFound
from nattery_user.api_tokens import repository
from nattery_user.api_tokens.schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenOut
from nattery_user.audit import service as audit
from nattery_user.auth.tokens import new_api_token, token_hash
from nattery_user.deps import UserContext

PREFIX_CHARS = 12


async def create(ctx: UserContext, principal: Principal, body: ApiTokenCreate) -> ApiTokenCreated:
    if not principal.has_role(body.role):
        raise Forbidden(f"an API token cannot exceed your role ({principal.role.value})")
    max_days = ctx.settings.user.api_token_max_ttl_s // 86400
    expires_at = datetime.now(UTC) + timedelta(days=min(body.expires_in_days, max(1, max_days)))
    token = new_api_token()
    async with ctx.pool.connection() as conn:
        row = await repository.insert(
            conn,
            token_id=uuid.uuid4(),
            org_id=principal.org_id,
            user_id=uuid.UUID(principal.subject),
            name=body.name,
            role=body.role.value,
            token_hash=token_hash(token),
            prefix=token[:PREFIX_CHARS],
            expires_at=expires_at,
        )
    await audit.record(
        ctx.pool,
        org_id=principal.org_id,
        actor=principal.subject,
        action="api_token.created",
        target=f"api_token:{row['id']}",
        details={"name": body.name, "role": body.role.value},
    )
    return ApiTokenCreated(**row, token=token)


async def list_tokens(ctx: UserContext, principal: Principal) -> list[ApiTokenOut]:
    """Your own tokens; an admin sees every token of the org."""
    user_filter = None if principal.has_role(Role.ADMIN) else uuid.UUID(principal.subject)
    async with ctx.pool.connection() as conn:
        rows = await repository.list_for(conn, principal.org_id, user_filter)
    return [ApiTokenOut.model_validate(row) for row in rows]


async def revoke(ctx: UserContext, principal: Principal, token_id: uuid.UUID) -> None:
    async with ctx.pool.connection() as conn:
        row = await repository.get(conn, principal.org_id, token_id)
        mine = row is not None and str(row["user_id"]) == principal.subject
        if row is None or not (mine or principal.has_role(Role.ADMIN)):
            raise NotFound("no such API token")
        await repository.revoke(conn, token_id)
    await audit.record(
        ctx.pool,
        org_id=principal.org_id,
        actor=principal.subject,
        action="api_token.revoked",
        target=f"api_token:{token_id}",
    )
