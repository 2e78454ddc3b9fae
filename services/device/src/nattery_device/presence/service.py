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
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_device import outbox
from nattery_device.cancel import raise_if_cancelling
from nattery_device.presence import repository
from nattery_device.stream.hub import StreamPublisher
from nattery_device.telemetry.registry import DeviceEntry, RegistryCache
from nattery_shared.contracts.events import DeviceStatusChanged, EventType
from nattery_shared.contracts.mqtt import DeviceStatus, State, Telemetry

log = logging.getLogger(__name__)

LAST_SEEN_KEY = "device:lastseen"  # sorted set: device id -> last sample epoch seconds


# Latest value per field, merged across messages (the bridge publishes fast and slow groups): a field
# only moves forward in time, so a replayed (older) sample never overwrites a newer value.
_SET_LATEST_LUA = """
for i, key in ipairs(KEYS) do
  local record = ARGV[i]
  local a = string.find(record, '|', 1, true)
  local b = string.find(record, '|', a + 1, true)
  local c = string.find(record, '|', b + 1, true)
  local epoch = tonumber(string.sub(record, 1, a - 1))
  local incoming = cjson.decode(string.sub(record, c + 1))
  local stored = redis.call('HMGET', key, 'ts_epoch', 'values', 'field_ts')
  local values = stored[2] and cjson.decode(stored[2]) or {}
  local field_ts = stored[3] and cjson.decode(stored[3]) or {}
  for name, value in pairs(incoming) do
    if (field_ts[name] or -1) <= epoch then
      values[name] = value
      field_ts[name] = epoch
    end
  end
  redis.call('HSET', key, 'values', cjson.encode(values), 'field_ts', cjson.encode(field_ts))
  if epoch >= tonumber(stored[1] or '-1') then
    redis.call('HSET', key, 'ts_epoch', string.sub(record, 1, a - 1), 'ts', string.sub(record, a + 1, b - 1),
               'seq', string.sub(record, b + 1, c - 1))
  end
end
return 0
"""


def latest_key(device_id: uuid.UUID) -> str:
    return f"device:latest:{device_id}"


class PresenceService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: Redis,
        registry: RegistryCache,
        stream: StreamPublisher,
        *,
        relay: outbox.OutboxRelay | None = None,
        stale_after_s: float = 120.0,
        latest_every_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._registry = registry
        self._stream = stream
        self._relay = relay
        self._stale_after_s = stale_after_s
        self._status: dict[uuid.UUID, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._pushed: dict[tuple[uuid.UUID, tuple[str, ...]], float] = {}
        self._latest_every_s = latest_every_s
        self._redis_failing = False

    async def load(self) -> None:
        async with self._pool.connection() as conn:
            self._status = await repository.statuses(conn)

    # --- telemetry (hot path: one Redis round trip per batch) ----------------------------------
    async def record_telemetry(self, latest: dict[uuid.UUID, tuple[DeviceEntry, Telemetry]]) -> None:
        try:
            keys: list[str] = []
            args: list[str] = []  # one "epoch|iso ts|seq|values json" per device: fewer args to encode
            seen: dict[str, float] = {}
            mono = time.monotonic()
            for device_id, (_entry, sample) in latest.items():
                ts = sample.ts.timestamp()
                seen[str(device_id)] = ts
                # The merge runs in Redis (cjson): at most once a second per device and group of fields.
                group = (device_id, tuple(sample.values))
                if mono - self._pushed.get(group, -1e9) < self._latest_every_s:
                    continue
                self._pushed[group] = mono
                keys.append(latest_key(device_id))
                args.append(f"{ts!r}|{sample.ts.isoformat()}|{sample.seq}|{json.dumps(sample.values)}")
            pipe = self._redis.pipeline(transaction=False)
            if keys:
                pipe.eval(_SET_LATEST_LUA, len(keys), *keys, *args)
            pipe.zadd(LAST_SEEN_KEY, seen, gt=True)
            await pipe.execute()
            by_org: dict[uuid.UUID, list[tuple[DeviceEntry, Telemetry]]] = {}
            for entry, sample in latest.values():
                by_org.setdefault(entry.org_id, []).append((entry, sample))
            for org_id, samples in by_org.items():
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
                                for e, t in samples
                            ],
                        },
                    )
            self._redis_failing = False
        except Exception as err:  # Redis is a cache here: never hold ingest for it
            if not self._redis_failing:
                log.warning("cannot update latest values in redis: %r", err)
                self._redis_failing = True
        now = time.time()
        waking = [
            (entry, sample)
            for device_id, (entry, sample) in latest.items()
            if self._status.get(device_id, "offline") == DeviceStatus.OFFLINE
            and now - sample.ts.timestamp() < self._stale_after_s
        ]
        if waking:
            # PostgreSQL transactions off the hot path: ingest never waits for presence bookkeeping.
            for entry, _ in waking:
                self._status[entry.id] = DeviceStatus.ONLINE.value
            task = asyncio.create_task(self._wake(waking))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _wake(self, waking: list[tuple[DeviceEntry, Telemetry]]) -> None:
        for entry, sample in waking:
            try:
                await self.set_status(entry, DeviceStatus.ONLINE, "telemetry received", sample.ts)
            except Exception as err:
                self._status.pop(entry.id, None)  # retried with the next sample
                log.warning("cannot mark %s online: %r", entry.id, err)

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
            await outbox.enqueue(
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
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep()
                if failing:
                    log.info("presence sweep works again")
                failing = False
            except Exception as err:
                raise_if_cancelling()
                if not failing:
                    log.warning("presence sweep failed: %r", err)
                failing = True
            with contextlib.suppress(Exception):
                await self.load()  # other replicas change statuses too
