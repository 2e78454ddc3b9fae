from __future__ import annotations

from fastapi import APIRouter, Response, status

from nattery_user.auth import service
from nattery_user.auth.schemas import (
    AccessToken,
    LoginRequest,
    RefreshRequest,
    TokenExchangeRequest,
    TokenPair,
)
from nattery_user.deps import ClientAddressDep, ContextDep, UserAgentDep

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", summary="Email and password for an access token and a refresh token (public)")
async def login(
    body: LoginRequest, ctx: ContextDep, address: ClientAddressDep, user_agent: UserAgentDep
) -> TokenPair:
    return await service.login(
        ctx,
        email=body.email,
        password=body.password,
        org_id=body.org_id,
        address=address,
        user_agent=user_agent,
    )


@router.post("/refresh", summary="Rotate a refresh token; reusing an old one revokes the session (public)")
async def refresh(body: RefreshRequest, ctx: ContextDep) -> TokenPair:
    return await service.refresh(ctx, body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke the session (public)")
async def logout(body: RefreshRequest, ctx: ContextDep) -> Response:
    await service.logout(ctx, body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/token", summary="Exchange a personal API token for a short-lived access token (public)")
async def token(body: TokenExchangeRequest, ctx: ContextDep, address: ClientAddressDep) -> AccessToken:
    return await service.exchange_api_token(ctx, body.api_token, address=address)
