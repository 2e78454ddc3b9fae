"""Devices: viewers read, admins register and change them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from nattery_device.deps import RegistryDep, RelayDep
from nattery_device.devices import service
from nattery_device.devices.schemas import Device, DeviceCreate, DeviceKind, DeviceUpdate
from nattery_shared.auth import Admin, Viewer
from nattery_shared.deps import PoolDep
from nattery_shared.validation import Offset

router = APIRouter(tags=["devices"])


@router.get("/devices", summary="Devices of the caller's org")
async def list_devices(
    principal: Viewer,
    pool: PoolDep,
    site_id: uuid.UUID | None = None,
    kind: DeviceKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[Device]:
    return await service.list_devices(
        pool, principal.org_id, site_id=site_id, kind=kind.value if kind else None, limit=limit, offset=offset
    )


@router.post("/sites/{site_id}/devices", status_code=status.HTTP_201_CREATED)
async def register_device(
    site_id: uuid.UUID,
    body: DeviceCreate,
    principal: Admin,
    pool: PoolDep,
    registry: RegistryDep,
    relay: RelayDep,
) -> Device:
    device = await service.register(pool, principal.org_id, site_id, body)
    registry.invalidate()
    relay.poke()  # device.registered out now: trading refuses the site until it has seen it
    return device


@router.get("/devices/{device_id}")
async def get_device(device_id: uuid.UUID, principal: Viewer, pool: PoolDep) -> Device:
    return await service.get(pool, principal.org_id, device_id)


@router.patch("/devices/{device_id}")
async def update_device(device_id: uuid.UUID, body: DeviceUpdate, principal: Admin, pool: PoolDep) -> Device:
    return await service.update(pool, principal.org_id, device_id, body)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(
    device_id: uuid.UUID, principal: Admin, pool: PoolDep, registry: RegistryDep
) -> Response:
    await service.delete(pool, principal.org_id, device_id)
    registry.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
