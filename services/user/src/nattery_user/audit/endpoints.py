from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from nattery_shared.auth import Admin
from nattery_shared.deps import PoolDep
from nattery_shared.validation import IsoDatetimeAny
from nattery_user.audit import service
from nattery_user.audit.schemas import AuditPage

router = APIRouter(tags=["audit"])


@router.get("/audit", summary="The org's audit log, newest first (admin)")
async def list_audit(
    principal: Admin,
    pool: PoolDep,
    actor: str | None = None,
    action: Annotated[str | None, Query(description="exact, or a prefix ending in *: auth.*")] = None,
    since: IsoDatetimeAny | None = None,
    until: IsoDatetimeAny | None = None,
    before_id: Annotated[int | None, Query(description="next_before_id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditPage:
    return await service.search(
        pool,
        org_id=principal.org_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
