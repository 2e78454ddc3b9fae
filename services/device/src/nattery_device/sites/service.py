"""Site rules: provisioning creates MQTT credentials (password returned once), revocation locks the
site out of the broker at once (password file entry removed + SIGHUP: Mosquitto drops its connection)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.mqtt import TOPIC_PREFIX
from nattery_device.mqtt.credentials import BrokerReloadError, PasswordFile, generate_password
from nattery_device.sites import repository
from nattery_device.sites.schemas import MqttCredentials, ProvisionedSite, Site, SiteCreate, SiteUpdate
from nattery_shared.errors import DependencyUnavailable, NotFound
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)


def to_site(row: dict[str, Any]) -> Site:
    return Site(**row, mqtt_username=row["slug"])


async def _set_password(passwords: PasswordFile, username: str, encoded: str) -> None:
    try:
        await asyncio.to_thread(passwords.set_user, username, encoded)
    except (OSError, BrokerReloadError) as err:
        raise DependencyUnavailable(f"cannot update the MQTT broker's credentials: {err}") from err


async def _remove_password(passwords: PasswordFile, username: str) -> None:
    try:
        await asyncio.to_thread(passwords.remove_user, username)
    except (OSError, BrokerReloadError) as err:
        raise DependencyUnavailable(f"cannot update the MQTT broker's credentials: {err}") from err


def _credentials(slug: str, password: str) -> MqttCredentials:
    return MqttCredentials(username=slug, password=password, topic_prefix=f"{TOPIC_PREFIX}/{slug}/")


async def provision(
    pool: AsyncConnectionPool, passwords: PasswordFile, org_id: uuid.UUID, body: SiteCreate
) -> ProvisionedSite:
    password = generate_password()
    encoded = passwords.hash(password)
    async with pool.connection() as conn, conn.transaction():
        row = await repository.insert(conn, org_id, body.model_dump(mode="json"), password_hash=encoded)
        # Inside the transaction: if the broker cannot be updated, the site is not created either.
        await _set_password(passwords, row["slug"], encoded)
    return ProvisionedSite(**to_site(row).model_dump(), mqtt=_credentials(row["slug"], password))


async def get(pool: AsyncConnectionPool, org_id: uuid.UUID, site_id: uuid.UUID) -> Site:
    async with pool.connection() as conn:
        row = await repository.get(conn, org_id, site_id)
    if row is None:
        raise NotFound("site not found")
    return to_site(row)


async def list_sites(pool: AsyncConnectionPool, org_id: uuid.UUID, *, limit: int, offset: int) -> list[Site]:
    async with pool.connection() as conn:
        rows = await repository.list_for_org(conn, org_id, limit=limit, offset=offset)
    return [to_site(r) for r in rows]


async def update(pool: AsyncConnectionPool, org_id: uuid.UUID, site_id: uuid.UUID, body: SiteUpdate) -> Site:
    changes = body.model_dump(mode="json", exclude_unset=True)
    async with pool.connection() as conn:
        row = await repository.update(conn, org_id, site_id, changes)
    if row is None:
        raise NotFound("site not found")
    return to_site(row)


async def revoke(
    pool: AsyncConnectionPool, passwords: PasswordFile, org_id: uuid.UUID, site_id: uuid.UUID
) -> Site:
    async with pool.connection() as conn, conn.transaction():
        row = await repository.set_revoked(conn, org_id, site_id, True)
        if row is None:
            raise NotFound("site not found")
        await _remove_password(passwords, row["slug"])
    return to_site(row)


async def rotate(
    pool: AsyncConnectionPool, passwords: PasswordFile, org_id: uuid.UUID, site_id: uuid.UUID
) -> ProvisionedSite:
    password = generate_password()
    encoded = passwords.hash(password)
    async with pool.connection() as conn, conn.transaction():
        row = await repository.set_revoked(conn, org_id, site_id, False, password_hash=encoded)
        if row is None:
            raise NotFound("site not found")
        await _set_password(passwords, row["slug"], encoded)
    return ProvisionedSite(**to_site(row).model_dump(), mqtt=_credentials(row["slug"], password))


async def delete(
    pool: AsyncConnectionPool, passwords: PasswordFile, org_id: uuid.UUID, site_id: uuid.UUID
) -> None:
    async with pool.connection() as conn, conn.transaction():
        row = await repository.delete(conn, org_id, site_id)
        if row is None:
            raise NotFound("site not found")
        await _remove_password(passwords, row["slug"])


class CredentialsReconciler:
    """Periodically projects the registry (PostgreSQL) onto the broker's password file."""

    def __init__(self, pool: AsyncConnectionPool, passwords: PasswordFile, *, interval_s: float) -> None:
        self._pool = pool
        self._passwords = passwords
        self._interval_s = interval_s

    async def reconcile(self) -> bool:
        async with self._pool.connection() as conn:
            active, inactive = await repository.credentials(conn)
        return await asyncio.to_thread(self._passwords.reconcile, active, inactive)

    async def run(self) -> None:
        """Reconcile now and every ``interval_s``; a failure is retried with back-off (up to
        ``interval_s``), logged once when it starts and once when it works again."""
        await RetryLoop(
            self.reconcile,
            name="MQTT credentials reconcile",
            logger=log,
            every_s=self._interval_s,
            backoff=Backoff(initial_s=min(1.0, self._interval_s), max_s=max(1.0, self._interval_s)),
        ).run()
