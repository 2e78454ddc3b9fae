"""Gateway keys (created, rotated, revoked by an org admin) and gateway HTTP ingest.

Keys: ``ngw_`` + 32 random bytes (``secrets``), shown once; only their SHA-256 is stored. A key of 256
random bits needs no salt or slow hash: nothing can be guessed from the digest.

Ingest: a batch is accepted or rejected as a whole (one invalid or foreign reading refuses it, nothing
is written). A batch is applied once per gateway and ``batch_id``: the id is marked in the kit's
processed-events table in the same transaction that waits for the points to be stored, so a replay (or
a concurrent duplicate, which waits on the row lock) stores nothing and is answered ``duplicate``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import uuid

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.mqtt import Telemetry
from nattery_device.devices.registry import DeviceEntry, RegistryCache
from nattery_device.gateways import repository
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
from nattery_device.ingest.lines import telemetry_line
from nattery_device.ingest.telemetry import Sample
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_shared.errors import Forbidden, NotFound, Unauthorized, Unprocessable

log = logging.getLogger(__name__)

KEY_PREFIX = "ngw_"
KEY_HINT_CHARS = 12  # "ngw_" and 8 random characters
DEDUP_QUEUE = "device.gateway_ingest"
# Batch ids are uuid5(namespace, "<gateway id>/<batch id>") in the processed-events table.
_BATCH_NAMESPACE = uuid.UUID("6f1d8a52-2f4e-5b8e-9a43-1c0b7e0c9d21")

# The gateway's client address is the peer's, unless the peer is the nginx gateway, which sets
# X-Real-IP to the address it saw ($remote_addr; infrastructure/nginx/nattery/locations.conf). Only
# proxies on loopback or private networks (local runs, the compose network) are believed.
TRUSTED_PROXIES = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

READINGS = Counter("nattery_device_gateway_readings_total", "Gateway HTTP ingest readings", ["outcome"])
BATCHES = Counter("nattery_device_gateway_batches_total", "Gateway HTTP ingest batches", ["outcome"])


def new_key() -> tuple[str, bytes, str]:
    """(key shown once, its hash, its hint)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key_hash(key), key[:KEY_HINT_CHARS]


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def client_address(
    peer: str | None, real_ip: str | None
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The gateway's address: X-Real-IP when the peer is a trusted proxy (nginx), else the peer."""
    try:
        address = ipaddress.ip_address(peer) if peer else None
    except ValueError:
        return None
    if address is not None and real_ip and any(address in net for net in TRUSTED_PROXIES):
        try:
            return ipaddress.ip_address(real_ip.strip())
        except ValueError:
            return None
    return address


def _public(row: GatewayRow) -> Gateway:
    return Gateway(
        id=row.id,
        name=row.name,
        site_ids=row.site_ids,
        allowed_cidrs=[str(n) for n in row.allowed_cidrs],
        key_hint=row.key_hint,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        previous_key_valid_until=row.previous_key_valid_until,
    )


def _with_key(row: GatewayRow, key: str) -> GatewayWithKey:
    return GatewayWithKey(**_public(row).model_dump(), api_key=key)


async def create(pool: AsyncConnectionPool, org_id: uuid.UUID, body: GatewayCreate) -> GatewayWithKey:
    site_ids = list(dict.fromkeys(body.site_ids))
    key, digest, hint = new_key()
    async with pool.connection() as conn, conn.transaction():
        if site_ids:
            known = await repository.org_site_ids(conn, org_id, site_ids)
            for i, site_id in enumerate(site_ids):
                if site_id not in known:
                    raise Unprocessable(
                        f"site_ids[{i}]: no such site",
                        details={"loc": ["body", "site_ids", i], "site_id": str(site_id)},
                    )
        row = await repository.insert(
            conn,
            org_id,
            name=body.name,
            site_ids=site_ids,
            allowed_cidrs=list(dict.fromkeys(body.allowed_cidrs)),
            key_hash=digest,
            key_hint=hint,
        )
    log.info("gateway %s created in org %s", row.id, org_id)
    return _with_key(row, key)


async def list_gateways(
    pool: AsyncConnectionPool, org_id: uuid.UUID, limit: int, offset: int
) -> list[Gateway]:
    async with pool.connection() as conn:
        return [_public(r) for r in await repository.list_for_org(conn, org_id, limit, offset)]


async def get(pool: AsyncConnectionPool, org_id: uuid.UUID, gateway_id: uuid.UUID) -> Gateway:
    async with pool.connection() as conn:
        row = await repository.get(conn, org_id, gateway_id)
    if row is None:
        raise NotFound("no such gateway")
    return _public(row)


async def rotate(
    pool: AsyncConnectionPool, org_id: uuid.UUID, gateway_id: uuid.UUID, body: GatewayRotate
) -> GatewayWithKey:
    key, digest, hint = new_key()
    async with pool.connection() as conn, conn.transaction():
        row = await repository.rotate(
            conn, org_id, gateway_id, key_hash=digest, key_hint=hint, overlap_s=body.overlap_s
        )
        if row is None:
            if await repository.get(conn, org_id, gateway_id) is None:
                raise NotFound("no such gateway")
            raise Forbidden("the gateway's key is revoked; create a new gateway")
    log.info("gateway %s key rotated (old key valid %d s more)", gateway_id, body.overlap_s)
    return _with_key(row, key)


async def revoke(pool: AsyncConnectionPool, org_id: uuid.UUID, gateway_id: uuid.UUID) -> Gateway:
    async with pool.connection() as conn, conn.transaction():
        row = await repository.revoke(conn, org_id, gateway_id)
    if row is None:
        raise NotFound("no such gateway")
    log.info("gateway %s revoked", gateway_id)
    return _public(row)


async def authenticate(
    pool: AsyncConnectionPool,
    key: str | None,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> GatewayRow:
    """The gateway of a presented key; 401 for a missing, unknown, rotated-out or revoked key, 403 for
    an address outside the gateway's allow-list."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
        raise Unauthorized("missing or invalid X-API-Key")
    async with pool.connection() as conn:
        row = await repository.by_key_hash(conn, key_hash(key))
    if row is None:
        raise Unauthorized("missing or invalid X-API-Key")
    if row.allowed_cidrs and (address is None or not any(_contains(n, address) for n in row.allowed_cidrs)):
        BATCHES.labels("address_refused").inc()
        raise Forbidden("this key is not accepted from this address")
    return row


def _contains(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return network.version == address.version and address in network


async def _entries(
    pool: AsyncConnectionPool, registry: RegistryCache, gateway: GatewayRow, batch: IngestBatch
) -> list[DeviceEntry]:
    """Each reading's device, all of the gateway's org and sites, or the whole batch is refused."""
    entries: list[DeviceEntry | None] = [registry.by_id(r.device_id) for r in batch.readings]
    missing = list({r.device_id for r, e in zip(batch.readings, entries, strict=True) if e is None})
    if missing:
        # Registered a moment ago (maybe on another replica)? One indexed query decides; the whole
        # registry is reloaded only then, never for ids that are not the org's devices.
        async with pool.connection() as conn:
            if await repository.org_device_ids(conn, gateway.org_id, missing):
                await registry.load()
                entries = [registry.by_id(r.device_id) for r in batch.readings]
    allowed = set(gateway.site_ids)
    checked: list[DeviceEntry] = []
    for i, entry in enumerate(entries):
        if entry is None or entry.org_id != gateway.org_id:
            raise NotFound(
                f"readings[{i}].device_id: no such device",
                details={"loc": ["body", "readings", i, "device_id"]},
            )
        if allowed and entry.site_id not in allowed:
            raise Forbidden(
                f"readings[{i}].device_id: this key may not write to the device's site",
                details={"loc": ["body", "readings", i, "device_id"]},
            )
        checked.append(entry)
    return checked


async def ingest(
    pool: AsyncConnectionPool,
    registry: RegistryCache,
    feed: GatewayFeed,
    gateway: GatewayRow,
    batch: IngestBatch,
) -> IngestResult:
    try:
        entries = await _entries(pool, registry, gateway, batch)
    except (NotFound, Forbidden):
        BATCHES.labels("refused").inc()
        raise
    samples: list[Sample] = []
    lines: list[str] = []
    for entry, reading in zip(entries, batch.readings, strict=True):
        sample = Telemetry.model_construct(ts=reading.ts, seq=reading.seq, values=reading.values)
        samples.append((entry, sample))
        lines.append(telemetry_line(entry.line_prefix, sample))
    batch_key = uuid.uuid5(_BATCH_NAMESPACE, f"{gateway.id}/{batch.batch_id}")
    async with pool.connection() as conn:
        async with conn.transaction():
            if not await PROCESSED_EVENTS.mark(conn, batch_key, DEDUP_QUEUE):
                BATCHES.labels("duplicate").inc()
                return IngestResult(batch_id=batch.batch_id, stored=0, duplicate=True)
            # Rolled back (the batch may be posted again) if the points are not stored in time.
            await feed.submit(samples, lines)
        await repository.touch(conn, gateway.id)
    BATCHES.labels("stored").inc()
    READINGS.labels("stored").inc(len(lines))
    return IngestResult(batch_id=batch.batch_id, stored=len(lines), duplicate=False)
