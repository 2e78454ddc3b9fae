"""Provider health for operators."""

from __future__ import annotations

from fastapi import APIRouter

from nattery_integration.deps import CtxDep, JobRunnerDep
from nattery_integration.providers import service
from nattery_integration.providers.schemas import ProviderStatus
from nattery_shared.auth import Viewer

router = APIRouter(tags=["providers"])


@router.get("/providers", summary="Each provider's health: last success, last error, breaker, next run")
async def list_providers(_: Viewer, ctx: CtxDep, runner: JobRunnerDep) -> list[ProviderStatus]:
    return await service.statuses(ctx, runner)
