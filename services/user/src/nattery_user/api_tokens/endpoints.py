from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from nattery_shared.auth import Viewer
from nattery_user.api_tokens import service
from nattery_user.api_tokens.schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenOut
from nattery_user.deps import ContextDep

router = APIRouter(prefix="/api-tokens", tags=["api tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a personal API token (shown once)")
async def create_token(body: ApiTokenCreate, principal: Viewer, ctx: ContextDep) -> ApiTokenCreated:
    return await service.create(ctx, principal, body)


@router.get("", summary="Your API tokens (an admin: the whole org's)")
async def list_tokens(principal: Viewer, ctx: ContextDep) -> list[ApiTokenOut]:
    return await service.list_tokens(ctx, principal)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API token")
async def revoke_token(token_id: uuid.UUID, principal: Viewer, ctx: ContextDep) -> Response:
    await service.revoke(ctx, principal, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
