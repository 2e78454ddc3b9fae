"""Connections of the caller's org: viewers read (secrets masked), admins change, operators test."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from nattery_integration.connections import service
from nattery_integration.connections.schemas import (
    Connection,
    ConnectionCreate,
    ConnectionTestResult,
    ConnectionUpdate,
)
from nattery_integration.deps import CtxDep
from nattery_shared.auth import Admin, Operator, Viewer
from nattery_shared.deps import PoolDep

router = APIRouter(tags=["connections"])


@router.get("/connections", summary="The org's provider connections (secrets masked)")
async def list_connections(
    principal: Viewer,
    pool: PoolDep,
    provider: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{1,31}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Connection]:
    return await service.list_connections(
        pool, principal.org_id, provider=provider, limit=limit, offset=offset
    )


@router.post("/connections", status_code=status.HTTP_201_CREATED, responses={409: {}, 422: {}})
async def create_connection(body: ConnectionCreate, principal: Admin, ctx: CtxDep) -> Connection:
    return await service.create(ctx, principal, body)


@router.get("/connections/{connection_id}")
async def get_connection(connection_id: uuid.UUID, principal: Viewer, pool: PoolDep) -> Connection:
    return await service.get(pool, principal.org_id, connection_id)


@router.patch("/connections/{connection_id}", responses={409: {}, 422: {}})
async def update_connection(
    connection_id: uuid.UUID, body: ConnectionUpdate, principal: Admin, ctx: CtxDep
) -> Connection:
    return await service.update(ctx, principal, connection_id, body)


@router.delete("/connections/{connection_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_connection(connection_id: uuid.UUID, principal: Admin, ctx: CtxDep) -> Response:
    await service.delete(ctx, principal, connection_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/connections/{connection_id}/test",
    summary="Call the provider with this connection and say what worked and what did not",
)
async def test_connection(connection_id: uuid.UUID, principal: Operator, ctx: CtxDep) -> ConnectionTestResult:
    return await service.test(ctx, principal, connection_id)
