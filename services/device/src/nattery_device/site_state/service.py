"""Each site's measured state, published once per interval as ``site.state_measured`` (docs/events.md).

Trading plans from the battery's measured state without asking device-service per plan: this service
already sees every sample, so it summarises them per site (newest SOC, mean battery / load / PV / grid
power over the interval) and publishes one event per site per interval.

Several replicas share the telemetry (MQTT shared subscription spreads a device's samples over them), so
no replica sees a whole site. Each replica sums its share per device in memory (a few dict operations
per sample on the ingest path), and at the end of each interval adds its sums to one Redis hash per
interval (one script call per 500 devices; the newest SOC wins by sample time, as for the latest
values). A short grace later one replica (``SET NX`` claim per interval) reads the hash, computes the
means and publishes. At 10,000 sites that is one hash of ~130,000 fields and 10,000 events a minute
(~170/s, published concurrently with confirms).

A summary is a measurement, not a fact to keep: it is published directly (no outbox); one lost to a
RabbitMQ outage is replaced by the next interval's, and trading treats an old one as stale.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter
from redis.asyncio import Redis

from nattery_contracts.aio import raise_if_cancelling
from nattery_contracts.events import EventType, SiteStateMeasured, make_event
from nattery_contracts.mqtt import Telemetry
from nattery_device.devices.registry import DeviceEntry
from nattery_device.publishing import SOURCE
from nattery_shared.rabbit import EventBus
from nattery_shared.retry import FailureLog

log = logging.getLogger(__name__)

EVENT_NAMESPACE = uuid.UUID("3b0f6a52-8c1d-4f47-a4a1-6d0d3c7e9b21")
# Powers averaged over the interval; the SOC is the newest reading.
POWER_FIELDS = ("battery_power_w", "load_power_w", "pv_power_w", "grid_power_w")
SOC_FIELD = "battery_soc_pct"
CHUNK = 500  # devices per script call: Redis runs a script without interruption

PUBLISHED = Counter(
    "nattery_device_site_states_total", "Per-site measured states, by outcome", ["outcome"]
)  # published | failed

# KEYS[1] = the interval's hash; ARGV[1] = ttl s, ARGV[2] = n; then n increments (field, amount) and the
# rest (field, "epoch|...") records, each kept only when not older than the stored one.
_MERGE_LUA = """
local key, ttl, n = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 0, n - 1 do
  redis.call('HINCRBYFLOAT', key, ARGV[3 + 2 * i], ARGV[4 + 2 * i])
end
for i = 3 + 2 * n, #ARGV, 2 do
  local stored = redis.call('HGET', key, ARGV[i])
  if not stored or tonumber(string.sub(stored, 1, string.find(stored, '|', 1, true) - 1))
      <= tonumber(string.sub(ARGV[i + 1], 1, string.find(ARGV[i + 1], '|', 1, true) - 1)) then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', key, ttl)
return 0
"""


@dataclass(slots=True)
class _DeviceSums:
    org_id: uuid.UUID
    site_id: uuid.UUID
    sums: list[float] = field(default_factory=lambda: [0.0] * len(POWER_FIELDS))
    counts: list[int] = field(default_factory=lambda: [0] * len(POWER_FIELDS))
    samples: int = 0
    newest_epoch: float = -math.inf
    soc_epoch: float = -math.inf
    soc_pct: float | None = None


def _key(bucket: int) -> str:
    return f"device:sitestate:{bucket}"


class SiteStateAggregator:
    def __init__(
        self,
        redis: Redis,
        bus: EventBus,
        *,
        interval_s: float = 60.0,
        grace_s: float | None = None,
        max_sample_age_s: float | None = None,
    ) -> None:
        self._redis = redis
        self._bus = bus
        self._interval_s = interval_s
        # Replicas add their share at the end of an interval; the publisher waits this long for them.
        self._grace_s = grace_s if grace_s is not None else min(5.0, interval_s / 4)
        # Replayed buffers (a bridge back online) are history, not the present state.
        self._max_age_s = max_sample_age_s if max_sample_age_s is not None else 2 * interval_s
        self._bucket = self._bucket_of(time.time())
        self._sums: dict[uuid.UUID, _DeviceSums] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Not a retry: an interval not summarised is replaced by the next one. Logged once when it
        # starts failing and once when site states go out again.
        self._failures = FailureLog("site-state summaries", log)

    def _bucket_of(self, epoch: float) -> int:
        return math.floor(epoch / self._interval_s)

    # --- ingest path ------------------------------------------------------------------------------
    async def record_telemetry(self, samples: Sequence[tuple[DeviceEntry, Telemetry]], /) -> None:
        self.record(samples, time.time())

    def record(self, samples: Sequence[tuple[DeviceEntry, Telemetry]], now: float) -> None:
        """Add samples to this replica's sums of the current interval (by arrival time)."""
        if self._bucket_of(now) != self._bucket:
            self._roll()  # the flusher has not rolled the interval yet: these samples are the next one's
        sums = self._sums
        oldest = now - self._max_age_s
        for entry, sample in samples:
            epoch = sample.ts.timestamp()
            if epoch < oldest:
                continue
            acc = sums.get(entry.id)
            if acc is None:
                acc = sums[entry.id] = _DeviceSums(entry.org_id, entry.site_id)
            values = sample.values
            acc.samples += 1
            if epoch > acc.newest_epoch:
                acc.newest_epoch = epoch
            for i, name in enumerate(POWER_FIELDS):
                v = values.get(name)
                if v is not None:
                    acc.sums[i] += v
                    acc.counts[i] += 1
            soc = values.get(SOC_FIELD)
            if soc is not None and epoch >= acc.soc_epoch:
                acc.soc_epoch = epoch
                acc.soc_pct = soc

    def _roll(self) -> None:
        """Start the next interval; this replica's sums of the finished one go to Redis."""
        finished, self._sums = self._sums, {}
        bucket, self._bucket = self._bucket, self._bucket_of(time.time())
        if finished:
            task = asyncio.get_running_loop().create_task(self._merge(bucket, finished))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- end of interval --------------------------------------------------------------------------
    async def _merge(self, bucket: int, finished: dict[uuid.UUID, _DeviceSums]) -> None:
        """Add this replica's sums of ``bucket`` to the interval's hash in Redis."""
        ttl = str(max(60, math.ceil(self._interval_s * 10)))
        items = list(finished.items())
        try:
            pipe = self._redis.pipeline(transaction=False)
            for i in range(0, len(items), CHUNK):
                incr: list[str] = []
                records: list[str] = []
                for device_id, acc in items[i : i + CHUNK]:
                    prefix = f"{acc.site_id}|{device_id}|"
                    incr += (prefix + "n", str(acc.samples))
                    for j, name in enumerate(POWER_FIELDS):
                        if acc.counts[j]:
                            incr += (f"{prefix}{name}|s", repr(acc.sums[j]))
                            incr += (f"{prefix}{name}|n", str(acc.counts[j]))
                    records += (prefix + "seen", f"{acc.newest_epoch!r}|{acc.org_id}")
                    if acc.soc_pct is not None:
                        records += (prefix + "soc", f"{acc.soc_epoch!r}|{acc.soc_pct!r}")
                pipe.eval(_MERGE_LUA, 1, _key(bucket), ttl, str(len(incr) // 2), *incr, *records)
            await pipe.execute()
            self._recovered()
        except Exception as err:  # the next interval's summary replaces this one
            raise_if_cancelling()
            self._trouble("cannot add site-state sums to redis", err)

    async def publish(self, bucket: int) -> int:
        """Publish ``bucket``'s per-site states if this replica claims it first. Returns how many."""
        claimed = await self._redis.set(f"{_key(bucket)}:claimed", "1", nx=True, ex=3600)
        if not claimed:
            return 0
        raw: dict[bytes, bytes] = await self._redis.hgetall(_key(bucket))  # type: ignore[assignment]
        window_start = datetime.fromtimestamp(bucket * self._interval_s, UTC)
        window_end = datetime.fromtimestamp((bucket + 1) * self._interval_s, UTC)
        events = [
            make_event(
                EventType.SITE_STATE_MEASURED, data, source=SOURCE, subject=str(data.site_id)
            ).model_copy(
                update={"id": uuid.uuid5(EVENT_NAMESPACE, f"{data.site_id}:{bucket}:{self._interval_s}")}
            )
            for data in summarise(raw, window_start, window_end)
        ]
        published = 0
        for i in range(0, len(events), CHUNK):  # confirms awaited concurrently, a chunk at a time
            results = await asyncio.gather(
                *(self._bus.publish(e) for e in events[i : i + CHUNK]), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            published += len(results) - len(failed)
            if failed:
                PUBLISHED.labels("failed").inc(len(failed))
                self._trouble(f"{len(failed)} site states not published", failed[0])
        PUBLISHED.labels("published").inc(published)
        await self._redis.delete(_key(bucket))
        return published

    async def run(self) -> None:
        """At each interval's end: add this replica's sums to Redis; after the grace, publish."""
        while True:
            bucket = self._bucket
            end = (bucket + 1) * self._interval_s
            await asyncio.sleep(max(0.0, end - time.time()))
            if self._bucket == bucket:  # no sample since the interval ended rolled it
                self._roll()
            await asyncio.gather(*self._background)
            await asyncio.sleep(max(0.0, end + self._grace_s - time.time()))
            try:
                await self.publish(bucket)
                self._recovered()
            except Exception as err:
                raise_if_cancelling()
                self._trouble("cannot publish site states", err)

    def _trouble(self, what: str, err: BaseException) -> None:
        self._failures.failed(RuntimeError(f"{what}: {err!r}"))

    def _recovered(self) -> None:
        self._failures.ok()


@dataclass(slots=True)
class _SiteSums:
    org_id: str
    newest_epoch: float = -math.inf
    samples: int = 0
    devices: int = 0
    socs: list[float] = field(default_factory=list)
    powers: dict[str, float] = field(default_factory=dict)


def summarise(
    raw: dict[bytes, bytes], window_start: datetime, window_end: datetime
) -> list[SiteStateMeasured]:
    """Per-site states from an interval's hash: means per device, summed over the site's devices."""
    per_device: dict[tuple[str, str], dict[str, str]] = {}
    for k, v in raw.items():
        site, device, rest = k.decode().split("|", 2)
        per_device.setdefault((site, device), {})[rest] = v.decode()
    sites: dict[str, _SiteSums] = {}
    for (site, _device), f in per_device.items():
        seen = f.get("seen")
        if seen is None:
            continue  # only part of a replica's write landed: skip the device this interval
        epoch, org = seen.split("|")
        s = sites.get(site)
        if s is None:
            s = sites[site] = _SiteSums(org)
        s.newest_epoch = max(s.newest_epoch, float(epoch))
        s.samples += int(float(f.get("n", "0")))
        s.devices += 1
        if "soc" in f:
            s.socs.append(float(f["soc"].split("|")[1]))
        for name in POWER_FIELDS:
            n = float(f.get(f"{name}|n", "0"))
            if n > 0:
                s.powers[name] = s.powers.get(name, 0.0) + float(f[f"{name}|s"]) / n
    return [
        SiteStateMeasured(
            org_id=uuid.UUID(s.org_id),
            site_id=uuid.UUID(site),
            measured_at=datetime.fromtimestamp(s.newest_epoch, UTC),
            window_start=window_start,
            window_end=window_end,
            soc_pct=min(100.0, max(0.0, sum(s.socs) / len(s.socs))) if s.socs else None,
            battery_power_w=s.powers.get("battery_power_w"),
            load_power_w=s.powers.get("load_power_w"),
            pv_power_w=s.powers.get("pv_power_w"),
            grid_power_w=s.powers.get("grid_power_w"),
            samples=s.samples,
            devices=s.devices,
        )
        for site, s in sites.items()
        if s.samples > 0
    ]
