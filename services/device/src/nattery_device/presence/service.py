"""Presence: last seen and latest values per device in Redis; online / offline / degraded from the
retained ``state`` (the bridge's last will publishes ``offline``), from telemetry arriving, and from a
staleness timeout. Every change is stored in PostgreSQL and published as ``device.status_changed``
(outbox, same transaction), and pushed to the live stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_contracts.aio import raise_if_cancelling
from nattery_contracts.events import DeviceStatusChanged, EventType
from nattery_contracts.mqtt import DeviceStatus, State, Telemetry
from nattery_device.devices.registry import DeviceEntry, RegistryCache
from nattery_device.presence import repository
from nattery_device.presence.latest import (
    LAST_SEEN_KEY,
    LATEST_CHUNK,
    SET_LATEST_LUA,
    group_field,
    latest_key,
)
from nattery_device.publishing import OUTBOX
from nattery_device.stream.hub import StreamPublisher
from nattery_shared.outbox import OutboxRelay
from nattery_shared.retry import Backoff, FailureLog, RetryLoop

log = logging.getLogger(__name__)

Sample = tuple[DeviceEntry, Telemetry]


class PresenceService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: Redis,
        registry: RegistryCache,
        stream: StreamPublisher,
        *,
        relay: OutboxRelay | None = None,
        stale_after_s: float = 120.0,
        latest_every_s: float = 1.0,
        on_online: Callable[[uuid.UUID], Awaitable[object]] | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._registry = registry
        self._stream = stream
        self._relay = relay
        self._stale_after_s = stale_after_s
        # Called (in the background) when a device goes online: the command path redelivers to it.
        self._on_online = on_online
        # Went online, first telemetry not seen yet. The bridge announces itself (state "online")
        # before it subscribes to its commands, and publishes telemetry only after: a redelivery
        # triggered by the state alone can reach the broker before the subscription does, so the
        # first telemetry after it triggers one more (the bridge runs a command id once).
        self._confirm_online: set[uuid.UUID] = set()
        self._status: dict[uuid.UUID, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._latest_every_s = latest_every_s
        # Newest sample per device and group of fields since the last flush to Redis.
        self._pending: dict[tuple[uuid.UUID, tuple[str, ...]], Sample] = {}
        self._flush_due = 0.0
        self._group_fields: dict[tuple[str, ...], str] = {}
        # Marked online in memory, PostgreSQL transaction still queued: load() must not undo that.
        self._waking: set[uuid.UUID] = set()
        # Redis is a cache here: logged once when writing to it starts failing, once when it works.
        self._redis_failures = FailureLog("latest values to redis", log)

    async def load(self) -> None:
        async with self._pool.connection() as conn:
            statuses = await repository.statuses(conn)
        # A wake-up still queued would otherwise be seen as offline and queued again by the next
        # batch (2,000 devices coming online at once are 6-10 s of queued transactions).
        for device_id in self._waking:
            statuses[device_id] = DeviceStatus.ONLINE.value
        self._status = statuses

    # --- telemetry (hot path: in memory; Redis once per ``latest_every_s``) ---------------------
    async def record_telemetry(self, samples: Sequence[Sample], /) -> None:
        """Samples just received (any order, several per device): latest values, last seen, live
        stream and waking offline devices. Latest values and last seen are merged here and written to
        Redis at most once per ``latest_every_s`` (one EVAL per 500 devices and one ZADD), so Redis
        work no longer grows with the message rate."""
        pending = self._pending
        newest: dict[uuid.UUID, Sample] = {}
        for item in samples:
            entry, sample = item
            group = (entry.id, tuple(sample.values))
            held = pending.get(group)
            if held is None or held[1].ts <= sample.ts:
                pending[group] = item
            previous = newest.get(entry.id)
            if previous is None or previous[1].ts <= sample.ts:
                newest[entry.id] = item
        if time.monotonic() >= self._flush_due:
            await self.flush_latest()
        if self._confirm_online:
            for device_id in self._confirm_online.intersection(newest):
                self._confirm_online.discard(device_id)
                self._spawn_came_online(device_id)
        try:
            by_org: dict[uuid.UUID, list[Sample]] = {}
            for entry, sample in newest.values():
                by_org.setdefault(entry.org_id, []).append((entry, sample))
            for org_id, org_samples in by_org.items():
                if await self._stream.listening(org_id):
                    await self._stream.publish(
                        org_id,
                        {
                            "type": "telemetry",
                            "samples": [
                                {
                                    "device_id": str(e.id),
                                    "site_id": str(e.site_id),
                                    "ts": t.ts.isoformat(),
                                    "values": t.values,
                                }
                                for e, t in org_samples
                            ],
                        },
                    )
        except Exception as err:  # Redis is a cache here: never hold ingest for it
            self._redis_trouble(err)
        now = time.time()
        waking = [
            (entry, sample)
            for device_id, (entry, sample) in newest.items()
            if self._status.get(device_id, "offline") == DeviceStatus.OFFLINE
            and now - sample.ts.timestamp() < self._stale_after_s
        ]
        if waking:
            # PostgreSQL transactions off the hot path: ingest never waits for presence bookkeeping.
            for entry, _ in waking:
                self._status[entry.id] = DeviceStatus.ONLINE.value
                self._waking.add(entry.id)
            task = asyncio.create_task(self._wake(waking))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def flush_latest(self) -> None:
        """Write the merged latest values and last-seen times to Redis (one pipeline)."""
        pending, self._pending = self._pending, {}
        self._flush_due = time.monotonic() + self._latest_every_s
        if not pending:
            return
        keys: list[str] = []
        args: list[str] = []
        seen: dict[str, float] = {}
        fields = self._group_fields
        for (device_id, names), (_entry, sample) in pending.items():
            ts = sample.ts.timestamp()
            member = str(device_id)
            if seen.get(member, -1.0) < ts:
                seen[member] = ts
            field = fields.get(names)
            if field is None:
                field = fields[names] = group_field(names)
            keys.append(latest_key(device_id))
            args += (field, f"{ts!r}|{sample.ts.isoformat()}|{sample.seq}|{json.dumps(sample.values)}")
        try:
            pipe = self._redis.pipeline(transaction=False)
            for i in range(0, len(keys), LATEST_CHUNK):
                chunk = keys[i : i + LATEST_CHUNK]
                pipe.eval(SET_LATEST_LUA, len(chunk), *chunk, *args[2 * i : 2 * (i + LATEST_CHUNK)])
            pipe.zadd(LAST_SEEN_KEY, seen, gt=True)
            await pipe.execute()
            self._redis_failures.ok()
        except Exception as err:  # a cache: the next samples refill it
            self._redis_trouble(err)

    async def run_latest_flusher(self) -> None:
        """Flush what the hot path left pending when telemetry stops arriving."""

        async def flush_if_due() -> None:
            if self._pending and time.monotonic() >= self._flush_due:
                await self.flush_latest()  # never raises: Redis trouble is logged by _redis_trouble

        await RetryLoop(
            flush_if_due,
            name="latest values flush",
            logger=log,
            every_s=max(self._latest_every_s, 0.05),
            wait_first=True,
        ).run()

    def _redis_trouble(self, err: Exception) -> None:
        self._redis_failures.failed(err)

    async def _wake(self, waking: list[tuple[DeviceEntry, Telemetry]]) -> None:
        try:
            for entry, sample in waking:
                try:
                    await self.set_status(entry, DeviceStatus.ONLINE, "telemetry received", sample.ts)
                except Exception as err:
                    self._status.pop(entry.id, None)  # retried with the next sample
                    log.warning("cannot mark %s online: %r", entry.id, err)
                finally:
                    self._waking.discard(entry.id)
        finally:
            for entry, _ in waking:  # cancelled: let the next sample try again
                self._waking.discard(entry.id)

    # --- state topic ---------------------------------------------------------------------------
    async def apply_state(self, entry: DeviceEntry, state: State) -> None:
        reason = "last will" if state.status is DeviceStatus.OFFLINE else f"state: {state.status.value}"
        await self.set_status(
            entry, state.status, reason, state.ts, firmware=state.firmware, profile=state.profile
        )

    async def set_status(
        self,
        entry: DeviceEntry,
        status: DeviceStatus,
        reason: str,
        at: datetime,
        *,
        firmware: str | None = None,
        profile: str | None = None,
    ) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            previous = await repository.change_status(
                conn, entry.id, status.value, reason, at, firmware=firmware, profile=profile
            )
            if previous is False:
                self._status[entry.id] = status.value
                return False
            prev = DeviceStatus(previous) if isinstance(previous, str) else None
            await repository.record_change(
                conn, entry.id, entry.org_id, prev.value if prev else None, status.value, reason, at
            )
            await OUTBOX.enqueue(
                conn,
                EventType.DEVICE_STATUS_CHANGED,
                DeviceStatusChanged(
                    org_id=entry.org_id,
                    site_id=entry.site_id,
                    device_id=entry.id,
                    previous=prev,
                    status=status,
                    reason=reason,
                    at=at,
                ),
                subject=str(entry.id),
            )
        self._status[entry.id] = status.value
        if self._relay is not None:
            self._relay.poke()
        if status is DeviceStatus.ONLINE and self._on_online is not None:
            self._confirm_online.add(entry.id)
            self._spawn_came_online(entry.id)
        try:
            await self._redis.hset(
                latest_key(entry.id), mapping={"status": status.value, "status_at": at.isoformat()}
            )
            await self._stream.publish(
                entry.org_id,
                {
                    "type": "status",
                    "device_id": str(entry.id),
                    "site_id": str(entry.site_id),
                    "previous": prev.value if prev else None,
                    "status": status.value,
                    "reason": reason,
                    "at": at.isoformat(),
                },
            )
        except Exception as err:
            log.warning("status of %s stored, but redis/stream update failed: %r", entry.id, err)
        return True

    def _spawn_came_online(self, device_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._came_online(device_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _came_online(self, device_id: uuid.UUID) -> None:
        assert self._on_online is not None
        try:
            await self._on_online(device_id)
        except Exception as err:  # the sweeper's resend is still there
            raise_if_cancelling()
            log.warning("redelivery to %s after it came online failed: %r", device_id, err)

    # --- staleness -----------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Devices silent for longer than ``stale_after_s`` go offline. Returns how many changed."""
        cutoff = time.time() - self._stale_after_s
        raw: list[bytes] = await self._redis.zrangebyscore(LAST_SEEN_KEY, "-inf", cutoff)  # type: ignore[assignment]
        changed = 0
        for item in raw:
            device_id = uuid.UUID(item.decode())
            entry = self._registry.by_id(device_id)
            if entry is None or self._status.get(device_id) == DeviceStatus.OFFLINE:
                continue
            if await self.set_status(entry, DeviceStatus.OFFLINE, "stale: no data", datetime.now(UTC)):
                changed += 1
        return changed

    async def run_sweeper(self, interval_s: float) -> None:
        """Sweep every ``interval_s``, then re-read the statuses (other replicas change them too); a
        failing sweep is retried with back-off (up to the interval)."""

        async def sweep_then_load() -> None:
            try:
                await self.sweep()
            except Exception:
                with contextlib.suppress(Exception):
                    await self.load()
                raise
            with contextlib.suppress(Exception):
                await self.load()

        await RetryLoop(
            sweep_then_load,
            name="presence sweep",
            logger=log,
            every_s=interval_s,
            backoff=Backoff(initial_s=min(1.0, interval_s), max_s=max(1.0, interval_s)),
            wait_first=True,
        ).run()
