from __future__ import annotations

from fastapi import APIRouter

from nattery_shared.auth import Viewer
from nattery_user.deps import ContextDep
from nattery_user.preferences import service
from nattery_user.preferences.schemas import UserPreferences

router = APIRouter(prefix="/me/settings", tags=["settings"])


@router.get("", summary="Your timezone, units and notification channels")
async def get_settings(principal: Viewer, ctx: ContextDep) -> UserPreferences:
    return await service.get(ctx, principal)


@router.put("", summary="Replace your settings")
async def put_settings(body: UserPreferences, principal: Viewer, ctx: ContextDep) -> UserPreferences:
    return await service.put(ctx, principal, body)
