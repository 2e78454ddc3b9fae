"""Sites: viewers read, admins provision, change limits, rotate and revoke MQTT credentials."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from nattery_device.deps import PasswordsDep, RegistryDep
from nattery_device.sites import service
from nattery_device.sites.schemas import ProvisionedSite, Site, SiteCreate, SiteUpdate
from nattery_shared.auth import Admin, Viewer
from nattery_shared.deps import PoolDep
from nattery_shared.validation import Offset

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("", summary="Sites of the caller's org")
async def list_sites(
    principal: Viewer,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[Site]:
    return await service.list_sites(pool, principal.org_id, limit=limit, offset=offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Provision a site; the response carries its MQTT password, shown only once",
)
async def provision_site(
    body: SiteCreate, principal: Admin, pool: PoolDep, passwords: PasswordsDep, registry: RegistryDep
) -> ProvisionedSite:
    site = await service.provision(pool, passwords, principal.org_id, body)
    registry.invalidate()
    return site


@router.get("/{site_id}")
async def get_site(site_id: uuid.UUID, principal: Viewer, pool: PoolDep) -> Site:
    return await service.get(pool, principal.org_id, site_id)


@router.patch("/{site_id}", summary="Change a site's name, location, timezone or safety limits")
async def update_site(site_id: uuid.UUID, body: SiteUpdate, principal: Admin, pool: PoolDep) -> Site:
    return await service.update(pool, principal.org_id, site_id, body)


@router.post("/{site_id}/credentials/revoke", summary="Lock the site out of the broker now")
async def revoke_credentials(
    site_id: uuid.UUID, principal: Admin, pool: PoolDep, passwords: PasswordsDep, registry: RegistryDep
) -> Site:
    site = await service.revoke(pool, passwords, principal.org_id, site_id)
    registry.invalidate()
    return site


@router.post(
    "/{site_id}/credentials/rotate", summary="New MQTT password (shown once); re-enables a revoked site"
)
async def rotate_credentials(
    site_id: uuid.UUID, principal: Admin, pool: PoolDep, passwords: PasswordsDep, registry: RegistryDep
) -> ProvisionedSite:
    site = await service.rotate(pool, passwords, principal.org_id, site_id)
    registry.invalidate()
    return site


@router.delete("/{site_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_site(
    site_id: uuid.UUID, principal: Admin, pool: PoolDep, passwords: PasswordsDep, registry: RegistryDep
) -> Response:
    await service.delete(pool, passwords, principal.org_id, site_id)
    registry.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
