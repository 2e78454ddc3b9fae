"""Gateways: an org admin creates, lists, rotates and revokes gateway keys; a gateway posts readings to
``POST /ingest`` with its key in ``X-API-Key`` (no bearer token)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Security, status
from fastapi.security import APIKeyHeader

from nattery_device.deps import RegistryDep
from nattery_device.gateways import service
from nattery_device.gateways.feed import GatewayFeed
from nattery_device.gateways.repository import GatewayRow
from nattery_device.gateways.schemas import (
    Gateway,
    GatewayCreate,
    GatewayRotate,
    GatewayWithKey,
    IngestBatch,
    IngestResult,
)
from nattery_shared.app import ErrorBody
from nattery_shared.auth import Admin
from nattery_shared.deps import PoolDep
from nattery_shared.validation import Offset

router = APIRouter(tags=["gateways"])

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the gateway's key (POST /gateways shows it once)"
)


def get_feed(request: Request) -> GatewayFeed:
    feed: GatewayFeed = request.state.gateway_feed
    return feed


async def current_gateway(
    request: Request, pool: PoolDep, key: Annotated[str | None, Security(api_key_header)]
) -> GatewayRow:
    peer = request.client.host if request.client else None
    address = service.client_address(peer, request.headers.get("x-real-ip"))
    return await service.authenticate(pool, key, address)


FeedDep = Annotated[GatewayFeed, Depends(get_feed)]
GatewayDep = Annotated[GatewayRow, Depends(current_gateway)]


@router.post("/gateways", status_code=status.HTTP_201_CREATED, summary="New gateway key (shown once)")
async def create_gateway(body: GatewayCreate, principal: Admin, pool: PoolDep) -> GatewayWithKey:
    return await service.create(pool, principal.org_id, body)


@router.get("/gateways", summary="Gateways of the caller's org (keys never shown)")
async def list_gateways(
    principal: Admin,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[Gateway]:
    return await service.list_gateways(pool, principal.org_id, limit, offset)


@router.get("/gateways/{gateway_id}")
async def get_gateway(gateway_id: uuid.UUID, principal: Admin, pool: PoolDep) -> Gateway:
    return await service.get(pool, principal.org_id, gateway_id)


@router.post(
    "/gateways/{gateway_id}/rotate",
    summary="New key (shown once); the old one stops working, or after overlap_s",
)
async def rotate_gateway_key(
    gateway_id: uuid.UUID, principal: Admin, pool: PoolDep, body: GatewayRotate | None = None
) -> GatewayWithKey:
    return await service.rotate(pool, principal.org_id, gateway_id, body or GatewayRotate())


@router.post("/gateways/{gateway_id}/revoke", summary="The key stops working at once, for good")
async def revoke_gateway(gateway_id: uuid.UUID, principal: Admin, pool: PoolDep) -> Gateway:
    return await service.revoke(pool, principal.org_id, gateway_id)


@router.post(
    "/ingest",
    summary="A gateway's batch of readings, stored whole or not at all; a replayed batch_id stores nothing",
    responses={503: {"model": ErrorBody, "description": "Not stored (InfluxDB unavailable): post it again"}},
)
async def ingest(
    batch: IngestBatch, gateway: GatewayDep, pool: PoolDep, registry: RegistryDep, feed: FeedDep
) -> IngestResult:
    return await service.ingest(pool, registry, feed, gateway, batch)
