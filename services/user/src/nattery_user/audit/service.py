"""Recording and querying the audit log.

Action names used by this service: ``auth.login``, ``auth.login_failed``, ``auth.lockout``,
``auth.logout``, ``auth.refresh_reuse``, ``auth.token_exchange``, ``user.created``, ``user.updated``,
``user.role_changed``, ``user.disabled``, ``user.enabled``, ``user.unlocked``, ``user.password_changed``,
``api_token.created``, ``api_token.revoked``. Other services' entries arrive as ``audit.recorded``
events (their own action names) and ``command.requested`` events (``command.requested``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import AuditRecorded, CloudEvent, CommandRequested, EventType
from nattery_user.audit import repository
from nattery_user.audit.schemas import AuditEntry, AuditPage


async def record(
    pool: AsyncConnectionPool,
    *,
    org_id: uuid.UUID | None,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    async with pool.connection() as conn:
        await repository.insert(
            conn, org_id=org_id, actor=actor, action=action, target=target, details=details
        )


async def record_event(pool: AsyncConnectionPool, event: CloudEvent[Any]) -> bool:
    """Store an ``audit.recorded`` or ``command.requested`` event once (idempotent by event id)."""
    data = event.data
    async with pool.connection() as conn:
        if event.type is EventType.AUDIT_RECORDED and isinstance(data, AuditRecorded):
            return await repository.insert(
                conn,
                event_id=event.id,
                org_id=data.org_id,
                actor=data.actor,
                action=data.action,
                target=data.target,
                details=data.details,
                source=event.source,
                at=data.at,
            )
        if event.type is EventType.COMMAND_REQUESTED and isinstance(data, CommandRequested):
            target = f"device:{data.device_id}" if data.device_id else f"site:{data.site_id}"
            return await repository.insert(
                conn,
                event_id=event.id,
                org_id=data.org_id,
                actor=data.requested_by,
                action="command.requested",
                target=target,
                details={
                    "command_id": str(data.command_id),
                    "site_id": str(data.site_id),
                    "type": data.type,
                    "params": data.params,
                    "expires_at": data.expires_at.isoformat(),
                },
                source=event.source,
                at=event.time,
            )
    return False


async def search(
    pool: AsyncConnectionPool,
    *,
    org_id: uuid.UUID,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> AuditPage:
    async with pool.connection() as conn:
        rows = await repository.query(
            conn,
            org_id=org_id,
            actor=actor,
            action=action,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit + 1,
        )
    items = [AuditEntry.model_validate(row) for row in rows[:limit]]
    return AuditPage(items=items, next_before_id=items[-1].id if len(rows) > limit else None)
