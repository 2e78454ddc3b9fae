"""Connection rules: validation per provider, secrets encrypted at rest, every change audited.

Each change writes its ``audit.recorded`` event to the outbox in the same transaction (so no change
is stored without its audit entry, even with RabbitMQ down); the relay publishes it afterwards. Audit
details name the fields and secrets that changed, never a secret's value.

Connectors inside the service read an org's secrets with :func:`enabled_connections`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from nattery_contracts.events import AuditRecorded, EventType
from nattery_integration.connections import repository
from nattery_integration.connections.crypto import SecretBox, SecretsUndecryptable
from nattery_integration.connections.probes import PROBES, generic
from nattery_integration.connections.schemas import (
    SECRET_MASK,
    Connection,
    ConnectionCreate,
    ConnectionSecrets,
    ConnectionTestResult,
    ConnectionUpdate,
    TestCheck,
)
from nattery_integration.events import OUTBOX
from nattery_integration.providers.specs import ProviderSpec
from nattery_shared.auth import Principal
from nattery_shared.errors import NotFound, Unprocessable

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext

Row = dict[str, Any]


def _spec(ctx: IntegrationContext, provider: str) -> ProviderSpec:
    if provider not in ctx.clients:
        raise Unprocessable(
            f"provider: unknown provider {provider!r}",
            details={"field": "provider", "known": sorted(ctx.clients.names())},
        )
    return ctx.clients.spec(provider)


def validate_settings(spec: ProviderSpec, settings: dict[str, Any]) -> dict[str, Any]:
    try:
        model = spec.connection.settings_model.model_validate(settings)
    except ValidationError as err:
        errors = [
            {"loc": ["body", "settings", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
            for e in err.errors()
        ]
        first = errors[0]
        raise Unprocessable(
            f"{'.'.join(first['loc'][1:])}: {first['msg']} ({spec.title} settings)",
            details={"errors": errors},
        ) from err
    out: dict[str, Any] = model.model_dump(mode="json")
    return out


def validate_secrets(spec: ProviderSpec, secrets: dict[str, str]) -> None:
    allowed = spec.connection.secret_names
    for name, value in secrets.items():
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise Unprocessable(
                f"secrets.{name}: not a secret of {spec.title} (expected: {expected})",
                details={"field": f"secrets.{name}"},
            )
        if not value or len(value) > 4096:
            raise Unprocessable(f"secrets.{name}: 1 to 4096 characters", details={"field": f"secrets.{name}"})
    for name in spec.connection.required_secrets:
        if name not in secrets:
            raise Unprocessable(
                f"secrets.{name}: required by {spec.title}", details={"field": f"secrets.{name}"}
            )


def to_api(row: Row) -> Connection:
    return Connection(
        id=row["id"],
        provider=row["provider"],
        name=row["name"],
        settings=row["settings"],
        secrets={name: SECRET_MASK for name in row["secret_names"]},
        enabled=row["enabled"],
        last_test_at=row["last_test_at"],
        last_test_ok=row["last_test_ok"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _decrypt(box: SecretBox, row: Row) -> dict[str, str]:
    if row["secrets_blob"] is None:
        return {}
    return box.decrypt(
        bytes(row["secrets_blob"]),
        row["key_id"],
        connection_id=row["id"],
        org_id=row["org_id"],
        provider=row["provider"],
    )


def _encrypt(
    box: SecretBox, secrets: dict[str, str], *, connection_id: uuid.UUID, org_id: uuid.UUID, provider: str
) -> tuple[bytes | None, str | None]:
    if not secrets:
        return None, None
    blob, key_id = box.encrypt(secrets, connection_id=connection_id, org_id=org_id, provider=provider)
    return blob, key_id


async def _audit(
    conn: AsyncConnection[Any],
    *,
    org_id: uuid.UUID | None,
    actor: str,
    action: str,
    connection_id: uuid.UUID,
    details: dict[str, Any],
) -> None:
    await OUTBOX.enqueue(
        conn,
        EventType.AUDIT_RECORDED,
        AuditRecorded(
            org_id=org_id,
            actor=actor,
            action=action,
            target=f"connection:{connection_id}",
            details=details,
            at=datetime.now(UTC),
        ),
        subject=str(connection_id),
    )


async def create(ctx: IntegrationContext, principal: Principal, body: ConnectionCreate) -> Connection:
    spec = _spec(ctx, body.provider)
    settings = validate_settings(spec, body.settings)
    validate_secrets(spec, body.secrets)
    connection_id = uuid.uuid4()
    blob, key_id = _encrypt(
        ctx.secrets, body.secrets, connection_id=connection_id, org_id=principal.org_id, provider=spec.name
    )
    async with ctx.pool.connection() as conn, conn.transaction():
        row = await repository.insert(
            conn,
            connection_id=connection_id,
            org_id=principal.org_id,
            provider=spec.name,
            name=body.name,
            settings=settings,
            secret_names=sorted(body.secrets),
            blob=blob,
            key_id=key_id,
            enabled=body.enabled,
        )
        await _audit(
            conn,
            org_id=principal.org_id,
            actor=principal.subject,
            action="connection.created",
            connection_id=connection_id,
            details={
                "provider": spec.name,
                "name": body.name,
                "settings": settings,
                "secrets_set": sorted(body.secrets),
                "enabled": body.enabled,
            },
        )
    ctx.relay.poke()
    return to_api(row)


async def get(pool: AsyncConnectionPool, org_id: uuid.UUID, connection_id: uuid.UUID) -> Connection:
    async with pool.connection() as conn:
        row = await repository.get(conn, org_id, connection_id)
    if row is None:
        raise NotFound("connection not found")
    return to_api(row)


async def list_connections(
    pool: AsyncConnectionPool, org_id: uuid.UUID, *, provider: str | None, limit: int, offset: int
) -> list[Connection]:
    async with pool.connection() as conn:
        rows = await repository.list_for_org(conn, org_id, provider=provider, limit=limit, offset=offset)
    return [to_api(r) for r in rows]


async def update(
    ctx: IntegrationContext, principal: Principal, connection_id: uuid.UUID, body: ConnectionUpdate
) -> Connection:
    async with ctx.pool.connection() as conn, conn.transaction():
        row = await repository.get(conn, principal.org_id, connection_id, for_update=True)
        if row is None:
            raise NotFound("connection not found")
        spec = _spec(ctx, row["provider"])
        changed: list[str] = []
        settings = row["settings"]
        if body.settings is not None:
            settings = validate_settings(spec, body.settings)
            if settings != row["settings"]:
                changed.append("settings")
        secrets = _decrypt(ctx.secrets, row)
        secrets_changed: list[str] = []
        if body.secrets is not None:
            for name, value in body.secrets.items():
                if value is None:
                    if name in secrets:
                        del secrets[name]
                        secrets_changed.append(name)
                elif secrets.get(name) != value:
                    secrets[name] = value
                    secrets_changed.append(name)
            validate_secrets(spec, secrets)
        name = body.name if body.name is not None else row["name"]
        enabled = body.enabled if body.enabled is not None else row["enabled"]
        changed += [
            f
            for f, new, old in (("name", name, row["name"]), ("enabled", enabled, row["enabled"]))
            if new != old
        ]
        if not changed and not secrets_changed:
            return to_api(row)
        blob, key_id = (
            _encrypt(
                ctx.secrets, secrets, connection_id=row["id"], org_id=row["org_id"], provider=row["provider"]
            )
            if secrets_changed
            else (row["secrets_blob"], row["key_id"])
        )
        updated = await repository.update(
            conn,
            row["id"],
            name=name,
            settings=settings,
            secret_names=sorted(secrets),
            blob=blob,
            key_id=key_id,
            enabled=enabled,
        )
        details: dict[str, Any] = {
            "provider": row["provider"],
            "changed": changed,
            "secrets_changed": sorted(secrets_changed),
        }
        if "settings" in changed:
            details["settings"] = settings
        await _audit(
            conn,
            org_id=principal.org_id,
            actor=principal.subject,
            action="connection.updated",
            connection_id=row["id"],
            details=details,
        )
    ctx.relay.poke()
    return to_api(updated)


async def delete(ctx: IntegrationContext, principal: Principal, connection_id: uuid.UUID) -> None:
    async with ctx.pool.connection() as conn, conn.transaction():
        row = await repository.delete(conn, principal.org_id, connection_id)
        if row is None:
            raise NotFound("connection not found")
        await _audit(
            conn,
            org_id=principal.org_id,
            actor=principal.subject,
            action="connection.deleted",
            connection_id=row["id"],
            details={"provider": row["provider"], "name": row["name"]},
        )
    ctx.relay.poke()


async def test(
    ctx: IntegrationContext, principal: Principal, connection_id: uuid.UUID
) -> ConnectionTestResult:
    async with ctx.pool.connection() as conn:
        row = await repository.get(conn, principal.org_id, connection_id)
    if row is None:
        raise NotFound("connection not found")
    spec = _spec(ctx, row["provider"])
    checks: list[TestCheck] = []
    try:
        secrets = _decrypt(ctx.secrets, row)
    except SecretsUndecryptable:
        secrets = None
        checks.append(
            TestCheck(
                name="secrets",
                ok=False,
                detail="The stored secrets cannot be decrypted here (their key is not configured): "
                "enter the secrets again, or ask an operator to restore the key.",
            )
        )
    try:
        settings: BaseModel = spec.connection.settings_model.model_validate(row["settings"])
    except ValidationError:
        settings = None  # type: ignore[assignment]
        checks.append(
            TestCheck(
                name="settings",
                ok=False,
                detail=f"The saved settings no longer match what {spec.title} needs: edit and save them again.",
            )
        )
    if secrets is not None and settings is not None:
        probe = PROBES.get(spec.name, generic)
        checks += await probe(ctx.clients.get(spec.name), spec, settings, secrets)
    ok = all(c.ok for c in checks) and bool(checks)
    async with ctx.pool.connection() as conn:
        await repository.record_test(conn, row["id"], ok)
    return ConnectionTestResult(
        connection_id=row["id"], provider=spec.name, ok=ok, checks=checks, tested_at=datetime.now(UTC)
    )


async def enabled_connections(ctx: IntegrationContext, provider: str) -> list[ConnectionSecrets]:
    """Every org's enabled connection to ``provider``, secrets decrypted (for connectors and jobs).
    A connection whose secrets do not decrypt is left out (and says so in its test)."""
    async with ctx.pool.connection() as conn:
        rows = await repository.list_enabled(conn, provider)
    out = []
    for row in rows:
        try:
            secrets = _decrypt(ctx.secrets, row)
        except SecretsUndecryptable:
            continue
        out.append(
            ConnectionSecrets(
                id=row["id"],
                org_id=row["org_id"],
                provider=row["provider"],
                name=row["name"],
                settings=row["settings"],
                secrets=secrets,
            )
        )
    return out


async def rekey(pool: AsyncConnectionPool, box: SecretBox, *, batch: int = 100) -> int:
    """Re-encrypt every connection's secrets under the keyring's current key (idempotent: rows already
    under it are left alone). Each batch is one transaction with its audit events. Returns how many."""
    done = 0
    while True:
        async with pool.connection() as conn, conn.transaction():
            rows = await repository.not_under_key(conn, box.current, batch)
            for row in rows:
                secrets = _decrypt(box, row)
                blob, key_id = box.encrypt(
                    secrets, connection_id=row["id"], org_id=row["org_id"], provider=row["provider"]
                )
                await repository.set_secrets(conn, row["id"], blob, key_id)
                await _audit(
                    conn,
                    org_id=row["org_id"],
                    actor="system:rekey",
                    action="connection.secrets_rekeyed",
                    connection_id=row["id"],
                    details={"provider": row["provider"], "from_key": row["key_id"], "to_key": key_id},
                )
        done += len(rows)
        if len(rows) < batch:
            return done
