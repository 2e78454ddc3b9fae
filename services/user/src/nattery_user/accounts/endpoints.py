from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from nattery_shared.auth import Admin, Viewer
from nattery_user.accounts import service
from nattery_user.accounts.schemas import Me, Member, PasswordChange, UserCreate, UserCreated, UserUpdate
from nattery_user.deps import ContextDep

router = APIRouter(tags=["accounts"])


@router.get("/me", summary="Who the token belongs to and the orgs they can act in")
async def me(principal: Viewer, ctx: ContextDep) -> Me:
    return await service.me(ctx, principal)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change your password")
async def change_password(body: PasswordChange, principal: Viewer, ctx: ContextDep) -> Response:
    await service.change_password(ctx, principal, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", summary="Users of your org (admin)")
async def list_users(principal: Admin, ctx: ContextDep) -> list[Member]:
    return await service.list_users(ctx, principal)


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Create a user in your org (admin)")
async def create_user(body: UserCreate, principal: Admin, ctx: ContextDep) -> UserCreated:
    return await service.create_user(ctx, principal, body)


@router.get("/users/{user_id}", summary="One user of your org (admin)")
async def get_user(user_id: uuid.UUID, principal: Admin, ctx: ContextDep) -> Member:
    return await service.get_user(ctx, principal, user_id)


@router.patch("/users/{user_id}", summary="Change a user's role, name, or disable them (admin)")
async def update_user(user_id: uuid.UUID, body: UserUpdate, principal: Admin, ctx: ContextDep) -> Member:
    return await service.update_user(ctx, principal, user_id, body)


@router.post(
    "/users/{user_id}/unlock",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Clear a user's failed-login lockout (admin)",
)
async def unlock_user(user_id: uuid.UUID, principal: Admin, ctx: ContextDep) -> Response:
    await service.unlock_user(ctx, principal, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
