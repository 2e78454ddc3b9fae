"""In-memory view of the registry for the ingest path: topic slugs -> org, site, device, measurement.
Everything that arrives over MQTT names its site and device by slug; ingest, presence and the command
acknowledgements resolve them here.

Loaded in one query, refreshed periodically; a topic naming a site or device we do not know triggers
one targeted reload (rate-limited), so a site provisioned on another replica is found within a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from nattery_device.devices import repository
from nattery_device.devices.schemas import MEASUREMENT, DeviceKind
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    site_slug: str
    slug: str
    kind: DeviceKind
    measurement: str
    # measurement and tags of every line of this device, sorted by tag key: "inverter,device=..,org=..,site=.. "
    line_prefix: str


@dataclass(slots=True)
class SiteEntry:
    id: uuid.UUID
    org_id: uuid.UUID
    slug: str
    revoked: bool
    devices: dict[str, DeviceEntry] = field(default_factory=dict)


class RegistryCache:
    def __init__(
        self, pool: AsyncConnectionPool, *, refresh_s: float = 30.0, miss_reload_s: float = 1.0
    ) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._miss_reload_s = miss_reload_s
        self._sites: dict[str, SiteEntry] = {}
        self._by_device: dict[uuid.UUID, DeviceEntry] = {}
        self._loaded_at = 0.0
        # Bumped by invalidate(): a load that began before a change was committed must not mark its
        # (older) view as fresh, or a message for the new site would be dropped as unknown until
        # miss_reload_s had passed.
        self._generation = 0
        self._lock = asyncio.Lock()
        # A failed reload keeps the previous view and is retried with back-off (from 1 s up to
        # refresh_s), logged once when it starts failing and once when it works again.
        self._refresher = RetryLoop(
            self.load,
            name="registry reload",
            logger=log,
            every_s=refresh_s,
            backoff=Backoff(initial_s=min(1.0, refresh_s), max_s=refresh_s),
            wait_first=True,
        )

    async def load(self) -> None:
        async with self._lock:
            generation = self._generation
            async with self._pool.connection() as conn:
                rows = await repository.registry_rows(conn)
            sites: dict[str, SiteEntry] = {}
            by_device: dict[uuid.UUID, DeviceEntry] = {}
            for r in rows:
                site = sites.get(str(r["site_slug"]))
                if site is None:
                    site = sites[str(r["site_slug"])] = SiteEntry(
                        id=r["site_id"],
                        org_id=r["org_id"],
                        slug=str(r["site_slug"]),
                        revoked=bool(r["revoked"]),
                    )
                if r["device_id"] is None:
                    continue
                kind = DeviceKind(str(r["kind"]))
                measurement = MEASUREMENT[kind]
                entry = DeviceEntry(
                    id=r["device_id"],
                    org_id=site.org_id,
                    site_id=site.id,
                    site_slug=site.slug,
                    slug=str(r["device_slug"]),
                    kind=kind,
                    measurement=measurement,
                    line_prefix=f"{measurement},device={r['device_id']},org={site.org_id},site={site.id} ",
                )
                site.devices[entry.slug] = entry
                by_device[entry.id] = entry
            self._sites, self._by_device = sites, by_device
            self._loaded_at = time.monotonic() if generation == self._generation else 0.0

    def site(self, slug: str) -> SiteEntry | None:
        return self._sites.get(slug)

    def device(self, site_slug: str, device_slug: str) -> DeviceEntry | None:
        site = self._sites.get(site_slug)
        return None if site is None else site.devices.get(device_slug)

    def by_id(self, device_id: uuid.UUID) -> DeviceEntry | None:
        return self._by_device.get(device_id)

    async def resolve(self, site_slug: str, device_slug: str) -> DeviceEntry | None:
        """Look up, reloading once (at most every ``miss_reload_s``) when the slugs are unknown."""
        entry = self.device(site_slug, device_slug)
        if entry is None and time.monotonic() - self._loaded_at >= self._miss_reload_s:
            await self.load()
            entry = self.device(site_slug, device_slug)
        return entry

    def invalidate(self) -> None:
        self._generation += 1
        self._loaded_at = 0.0

    async def run(self) -> None:
        """Reload every ``refresh_s`` (the first load is the lifespan's) until cancelled."""
        await self._refresher.run()
