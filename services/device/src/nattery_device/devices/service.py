"""Device rules: registration publishes ``device.registered`` (through the outbox)."""

from __future__ import annotations

import uuid

from psycopg.errors import CheckViolation
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import DeviceRegistered, EventType
from nattery_device.devices import repository
from nattery_device.devices.schemas import Device, DeviceCreate, DeviceUpdate
from nattery_device.publishing import OUTBOX
from nattery_device.sites import repository as sites_repository
from nattery_shared.errors import NotFound, Unprocessable


async def register(
    pool: AsyncConnectionPool, org_id: uuid.UUID, site_id: uuid.UUID, body: DeviceCreate
) -> Device:
    async with pool.connection() as conn, conn.transaction():
        site = await sites_repository.get(conn, org_id, site_id)
        if site is None:
            raise NotFound("site not found")
        row = await repository.insert(conn, org_id, site_id, body.model_dump(mode="json"))
        device = Device(**row)
        await OUTBOX.enqueue(
            conn,
            EventType.DEVICE_REGISTERED,
            DeviceRegistered(
                org_id=org_id,
                site_id=site_id,
                device_id=device.id,
                site_slug=device.site_slug,
                device_slug=device.slug,
                kind=device.kind.value,
                profile=device.profile,
            ),
            subject=str(device.id),
        )
    return device


async def get(pool: AsyncConnectionPool, org_id: uuid.UUID, device_id: uuid.UUID) -> Device:
    async with pool.connection() as conn:
        row = await repository.get(conn, org_id, device_id)
    if row is None:
        raise NotFound("device not found")
    return Device(**row)


async def list_devices(
    pool: AsyncConnectionPool,
    org_id: uuid.UUID,
    *,
    site_id: uuid.UUID | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> list[Device]:
    async with pool.connection() as conn:
        rows = await repository.list_for_org(
            conn, org_id, site_id=site_id, kind=kind, limit=limit, offset=offset
        )
    return [Device(**r) for r in rows]


async def update(
    pool: AsyncConnectionPool, org_id: uuid.UUID, device_id: uuid.UUID, body: DeviceUpdate
) -> Device:
    try:
        async with pool.connection() as conn:
            row = await repository.update(
                conn, org_id, device_id, body.model_dump(mode="json", exclude_unset=True)
            )
    except CheckViolation as err:
        raise Unprocessable("meter_category applies to meters only, and every meter needs one") from err
    if row is None:
        raise NotFound("device not found")
    return Device(**row)


async def delete(pool: AsyncConnectionPool, org_id: uuid.UUID, device_id: uuid.UUID) -> None:
    async with pool.connection() as conn:
        if not await repository.delete(conn, org_id, device_id):
            raise NotFound("device not found")
