"""The command path: stored command -> MQTT publish (QoS 1) -> tracked acknowledgement.

States: pending -> sent -> accepted -> done | failed, or rejected / expired. Every transition is stored
with its time and published as ``device.command_acknowledged`` (outbox). A command that could not be
published stays pending and the sweeper sends it again; one past ``expires_at`` while pending or sent
is expired. Commands are idempotent by id (events) and by ``Idempotency-Key`` (REST).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CommandState, DeviceCommandAcknowledged, EventType
from nattery_contracts.mqtt import (
    AckStatus,
    Command,
    CommandAck,
    CommandType,
    SafetyLimits,
    SetPowerParams,
    TopicSuffix,
    topic,
)
from nattery_device.commands import repository
from nattery_device.commands.schemas import CommandCreate, CommandOut, Transition
from nattery_device.mqtt.publisher import MqttPublisher, NotConnected
from nattery_device.publishing import OUTBOX
from nattery_shared.errors import Conflict, NotFound, Unprocessable
from nattery_shared.outbox import OutboxRelay
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

COMMANDS = Counter("nattery_device_command_transitions_total", "Command state transitions", ["state"])

OPEN = ("pending", "sent")
ACK_TO_STATE: dict[AckStatus, CommandState] = {
    AckStatus.ACCEPTED: CommandState.ACCEPTED,
    AckStatus.REJECTED: CommandState.REJECTED,
    AckStatus.DONE: CommandState.DONE,
    AckStatus.FAILED: CommandState.FAILED,
    AckStatus.EXPIRED: CommandState.EXPIRED,
}
# An ack may overtake our own "sent" bookkeeping, hence pending in every source list.
ACK_FROM: dict[CommandState, tuple[str, ...]] = {
    CommandState.ACCEPTED: ("pending", "sent"),
    CommandState.REJECTED: ("pending", "sent"),
    CommandState.DONE: ("pending", "sent", "accepted"),
    CommandState.FAILED: ("pending", "sent", "accepted"),
    CommandState.EXPIRED: ("pending", "sent", "accepted"),
}

SCHEDULE_NAMESPACE = uuid.UUID("5d9f3c2e-8a51-4a0c-9d0f-2b6a0c7e4f11")


def check_limits(command_type: CommandType, params: dict[str, Any], limits: SafetyLimits) -> None:
    """Refuse set-points outside the site's envelope here, with a clear message (the bridge clamps too)."""
    if command_type is CommandType.SET_POWER:
        power = SetPowerParams.model_validate(params).battery_power_w
        if power > limits.max_discharge_w:
            raise Unprocessable(
                f"battery_power_w {power} exceeds the site's max_discharge_w {limits.max_discharge_w}"
            )
        if power < -limits.max_charge_w:
            raise Unprocessable(
                f"battery_power_w {power} exceeds the site's max_charge_w {limits.max_charge_w}"
            )


def request_hash(body: CommandCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_out(row: dict[str, Any], transitions: list[dict[str, Any]]) -> CommandOut:
    return CommandOut(**row, transitions=[Transition(**t) for t in transitions])


class CommandService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: MqttPublisher,
        *,
        relay: OutboxRelay | None = None,
        default_ttl_s: int = 300,
        resend_after_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._relay = relay
        self._default_ttl_s = default_ttl_s
        self._resend_after_s = resend_after_s

    # --- creation -------------------------------------------------------------------------------
    async def create_from_api(
        self,
        org_id: uuid.UUID,
        device_id: uuid.UUID,
        body: CommandCreate,
        *,
        idempotency_key: str | None,
        actor: str,
    ) -> tuple[CommandOut, bool]:
        """Returns the command and whether it was created by this call."""
        now = datetime.now(UTC)
        expires_at = body.expires_at or now + timedelta(seconds=body.ttl_s or self._default_ttl_s)
        if expires_at <= now:
            raise Unprocessable("expires_at is in the past")
        digest = request_hash(body)
        async with self._pool.connection() as conn, conn.transaction():
            if idempotency_key is not None:
                existing = await repository.by_idempotency_key(conn, org_id, idempotency_key)
                if existing is not None:
                    if existing["request_hash"] != digest:
                        raise Conflict("Idempotency-Key was already used with a different request")
                    return to_out(existing, await repository.transitions(conn, existing["id"])), False
            device = await repository.device_by_id(conn, org_id, device_id)
            if device is None:
                raise NotFound("device not found")
            check_limits(body.type, body.params, SafetyLimits.model_validate(device["safety_limits"]))
            command_id = uuid.uuid4()
            inserted = await repository.insert(
                conn,
                {
                    "id": command_id,
                    "org_id": org_id,
                    "site_id": device["site_id"],
                    "device_id": device_id,
                    "type": body.type.value,
                    "params": body.params,
                    "source": f"api:{actor}",
                    "idempotency_key": idempotency_key,
                    "request_hash": digest,
                    "issued_at": now,
                    "expires_at": expires_at,
                },
            )
            if not inserted:  # a concurrent request with the same key won the race
                raise Conflict("a request with this Idempotency-Key is in progress; retry")
            row = await repository.get(conn, command_id)
            assert row is not None
            await self._emit(conn, row, CommandState.PENDING, now)
        await self.dispatch(command_id)
        return await self.get(org_id, command_id), True

    async def create_from_event(
        self,
        *,
        command_id: uuid.UUID,
        org_id: uuid.UUID,
        site_id: uuid.UUID,
        device_id: uuid.UUID | None,
        command_type: CommandType,
        params: dict[str, Any],
        expires_at: datetime,
        source: str,
    ) -> bool:
        """Idempotent by ``command_id``. Raises for a target or parameters that cannot be right."""
        now = datetime.now(UTC)
        Command(
            id=command_id,
            type=command_type,
            params=params,
            issued_at=min(now, expires_at - timedelta(seconds=1)),
            expires_at=expires_at,
        )
        async with self._pool.connection() as conn, conn.transaction():
            device = await repository.device_target(conn, org_id, site_id, device_id)
            if device is None:
                raise NotFound(f"no target device for site {site_id} (device {device_id})")
            check_limits(command_type, params, SafetyLimits.model_validate(device["safety_limits"]))
            inserted = await repository.insert(
                conn,
                {
                    "id": command_id,
                    "org_id": org_id,
                    "site_id": site_id,
                    "device_id": device["id"],
                    "type": command_type.value,
                    "params": params,
                    "source": source,
                    "idempotency_key": None,
                    "request_hash": None,
                    "issued_at": now,
                    "expires_at": expires_at,
                },
            )
            if inserted:
                row = await repository.get(conn, command_id)
                assert row is not None
                await self._emit(conn, row, CommandState.PENDING, now)
        if inserted:
            await self.dispatch(command_id)
        return inserted

    # --- publish --------------------------------------------------------------------------------
    async def dispatch(self, command_id: uuid.UUID, *, resend_before: datetime | None = None) -> bool:
        """Publish a pending command, or a sent one still unanswered at ``resend_before``; True when
        the broker took it.

        The command's row stays locked from the read to the ``sent`` transition, so the API's dispatch
        of a new command and a sweeper (of any replica) that found it still pending never both publish
        it, and an acknowledgement overtaking our bookkeeping waits for ``sent`` to be stored first.
        """
        async with self._pool.connection() as conn, conn.transaction():
            row = await repository.claim(conn, command_id)
            if row is None or row["state"] not in OPEN:
                return False
            if row["state"] == "sent" and (resend_before is None or row["sent_at"] >= resend_before):
                return False  # answered or re-sent since the caller looked: not due any more
            now = datetime.now(UTC)
            if row["expires_at"] <= now:
                await self._move_in(
                    conn, command_id, OPEN, CommandState.EXPIRED, now, reason="expired before delivery"
                )
                return False
            message = Command(
                id=row["id"],
                type=CommandType(row["type"]),
                params=row["params"],
                issued_at=row["issued_at"],
                expires_at=row["expires_at"],
            )
            try:
                await self._publisher.publish(
                    topic(row["site_slug"], row["device_slug"], TopicSuffix.COMMAND),
                    message.model_dump_json().encode(),
                )
            except (TimeoutError, NotConnected) as err:
                log.warning("command %s not published yet (%s); the sweeper retries", command_id, err)
                return False
            if row["state"] == "pending":
                await self._move_in(conn, command_id, ("pending",), CommandState.SENT, datetime.now(UTC))
        return True

    async def redeliver(self, device_id: uuid.UUID) -> int:
        """The device just came online: publish its open commands again now.

        A command published before a site's bridge ever connected reaches nobody (the broker has no
        session for it yet), and one published while it was away may have been lost with its session;
        without this it would wait for the sweeper's ``resend_after_s``. A command the bridge already
        has is recognised by its id there and not run twice. Returns how many were published.
        """
        async with self._pool.connection() as conn:
            ids = await repository.open_for_device(conn, device_id, datetime.now(UTC))
        sent = 0
        for command_id in ids:
            if await self.dispatch(command_id, resend_before=datetime.now(UTC)):
                sent += 1
        if sent:
            log.info("device %s came online: %d open command(s) published again", device_id, sent)
        return sent

    # --- acknowledgements -------------------------------------------------------------------------
    async def apply_ack(self, site_id: uuid.UUID, device_id: uuid.UUID, ack: CommandAck) -> bool:
        state = ACK_TO_STATE[ack.status]
        async with self._pool.connection() as conn:
            row = await repository.get(conn, ack.id)
        if row is None or row["device_id"] != device_id or row["site_id"] != site_id:
            log.warning("ack for unknown command %s from device %s ignored", ack.id, device_id)
            return False
        return await self._move(
            ack.id,
            ACK_FROM[state],
            state,
            ack.ts,
            edge_status=ack.status.value,
            reason=ack.reason,
            applied=ack.applied,
        )

    # --- sweeper --------------------------------------------------------------------------------
    async def sweep(self) -> None:
        now = datetime.now(UTC)
        async with self._pool.connection() as conn:
            rows = await repository.due(
                conn, now=now, resend_before=now - timedelta(seconds=self._resend_after_s)
            )
        for row in rows:
            if row["expires_at"] <= now:
                await self._move(
                    row["id"], OPEN, CommandState.EXPIRED, now, reason="no answer before expires_at"
                )
            else:
                await self.dispatch(row["id"], resend_before=now - timedelta(seconds=self._resend_after_s))

    async def run_sweeper(self, interval_s: float) -> None:
        """Sweep every ``interval_s``; a failing sweep is retried with back-off (up to the interval)."""
        await RetryLoop(
            self.sweep,
            name="command sweep",
            logger=log,
            every_s=interval_s,
            backoff=Backoff(initial_s=min(1.0, interval_s), max_s=max(1.0, interval_s)),
            wait_first=True,
        ).run()

    # --- reads ----------------------------------------------------------------------------------
    async def get(self, org_id: uuid.UUID, command_id: uuid.UUID) -> CommandOut:
        async with self._pool.connection() as conn:
            row = await repository.get(conn, command_id, org_id)
            if row is None:
                raise NotFound("command not found")
            return to_out(row, await repository.transitions(conn, command_id))

    # --- internals ------------------------------------------------------------------------------
    async def _move(
        self,
        command_id: uuid.UUID,
        from_states: tuple[str, ...],
        state: CommandState,
        at: datetime,
        *,
        edge_status: str | None = None,
        reason: str | None = None,
        applied: dict[str, Any] | None = None,
    ) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            return await self._move_in(
                conn,
                command_id,
                from_states,
                state,
                at,
                edge_status=edge_status,
                reason=reason,
                applied=applied,
            )

    async def _move_in(
        self,
        conn: Any,
        command_id: uuid.UUID,
        from_states: tuple[str, ...],
        state: CommandState,
        at: datetime,
        *,
        edge_status: str | None = None,
        reason: str | None = None,
        applied: dict[str, Any] | None = None,
    ) -> bool:
        """The transition inside the caller's transaction."""
        row = await repository.move(
            conn,
            command_id,
            from_states=from_states,
            to_state=state.value,
            at=at,
            edge_status=edge_status,
            reason=reason,
            applied=applied,
        )
        if row is None:
            return False
        await self._emit(conn, row, state, at)
        return True

    async def _emit(self, conn: Any, row: dict[str, Any], state: CommandState, at: datetime) -> None:
        COMMANDS.labels(state.value).inc()
        await OUTBOX.enqueue(
            conn,
            EventType.DEVICE_COMMAND_ACKNOWLEDGED,
            DeviceCommandAcknowledged(
                org_id=row["org_id"],
                site_id=row["site_id"],
                device_id=row["device_id"],
                command_id=row["id"],
                command_type=row["type"],
                state=state,
                edge_status=AckStatus(row["edge_status"]) if row["edge_status"] else None,
                reason=row["reason"],
                applied=row["applied"] or {},
                at=at,
            ),
            subject=str(row["id"]),
        )
        if self._relay is not None:
            self._relay.poke()
