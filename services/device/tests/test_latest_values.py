"""Latest values in Redis (presence): merged in memory, written once per interval, one hash field per
group of fields, forward-only in time whichever replica writes, read back merged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from nattery_contracts.mqtt import Telemetry
from nattery_device.devices.registry import DeviceEntry
from nattery_device.devices.schemas import DeviceKind
from nattery_device.presence.service import LAST_SEEN_KEY, PresenceService, latest_key
from nattery_device.telemetry.service import _latest
from nattery_shared.testing import TEST_REDIS_URL


class _NoStream:
    async def listening(self, org_id: uuid.UUID) -> bool:
        return False

    async def publish(self, org_id: uuid.UUID, message: dict[str, Any]) -> None:
        raise AssertionError("nobody listens")


def _presence(redis: Redis, every_s: float) -> PresenceService:
    presence = PresenceService(None, redis, None, _NoStream(), latest_every_s=every_s)  # type: ignore[arg-type]
    presence._status = _AlwaysOnline()  # no PostgreSQL here: nothing to wake
    return presence


class _AlwaysOnline(dict[uuid.UUID, str]):
    def get(self, key: uuid.UUID, default: Any = None) -> str:
        return "online"


def _entry() -> DeviceEntry:
    device, org, site = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    return DeviceEntry(
        device, org, site, "s", "inv1", DeviceKind.INVERTER, "inverter", f"inverter,device={device} "
    )


def _sample(ts: datetime, seq: int, **values: float) -> Telemetry:
    return Telemetry(ts=ts, seq=seq, values=values)


async def test_groups_merge_and_only_move_forward_across_replicas() -> None:
    redis = Redis.from_url(TEST_REDIS_URL)
    entry = _entry()
    try:
        a, b = _presence(redis, 60.0), _presence(redis, 60.0)
        t0 = datetime.now(UTC).replace(microsecond=0)
        # Replica A: the first sample goes out at once, then at most once per interval (60 s here),
        # keeping the newest of several samples in one batch and across batches.
        await a.record_telemetry([(entry, _sample(t0 + timedelta(seconds=5), 2, power_w=5.0, soc_pct=55.0))])
        assert _latest(entry.id, entry.site_id, await redis.hgetall(latest_key(entry.id))).seq == 2
        await a.record_telemetry(
            [
                (entry, _sample(t0 + timedelta(seconds=10), 3, power_w=10.0, soc_pct=60.0)),
                (entry, _sample(t0, 1, power_w=0.0, soc_pct=50.0)),
            ]
        )
        assert _latest(entry.id, entry.site_id, await redis.hgetall(latest_key(entry.id))).seq == 2
        await a.flush_latest()
        # Replica B got an older (redelivered) fast sample and a slow group: the fast group stays.
        await b.record_telemetry(
            [
                (entry, _sample(t0 + timedelta(seconds=1), 9, power_w=-1.0, soc_pct=1.0)),
                (entry, _sample(t0 + timedelta(seconds=7), 4, energy_kwh=123.5)),
            ]
        )
        await b.flush_latest()
        latest = _latest(entry.id, entry.site_id, await redis.hgetall(latest_key(entry.id)))
        assert latest.values == {"power_w": 10.0, "soc_pct": 60.0, "energy_kwh": 123.5}
        assert latest.seq == 3 and latest.ts == t0 + timedelta(seconds=10)
        score = await redis.zscore(LAST_SEEN_KEY, str(entry.id))
        assert score == (t0 + timedelta(seconds=10)).timestamp()
        # A newer slow sample that also carries a fast field wins for that field only.
        await b.record_telemetry(
            [(entry, _sample(t0 + timedelta(seconds=20), 5, energy_kwh=124.0, soc_pct=61.0))]
        )
        await b.flush_latest()
        latest = _latest(entry.id, entry.site_id, await redis.hgetall(latest_key(entry.id)))
        assert latest.values == {"power_w": 10.0, "soc_pct": 61.0, "energy_kwh": 124.0}
        assert latest.seq == 5
    finally:
        await redis.delete(latest_key(entry.id))
        await redis.zrem(LAST_SEEN_KEY, str(entry.id))
        await redis.aclose()


async def test_hash_written_before_the_group_layout_is_still_read() -> None:
    device, site = uuid.uuid4(), uuid.uuid4()
    raw = {
        b"values": b'{"power_w": 1.0, "soc_pct": 50.0}',
        b"field_ts": b'{"power_w": 100.0, "soc_pct": 100.0}',
        b"ts_epoch": b"100.0",
        b"ts": b"1970-01-01T00:01:40+00:00",
        b"seq": b"7",
        b"status": b"online",
        b"g:0123456789ab": b'200.0|1970-01-01T00:03:20+00:00|8|{"power_w": 2.0}',
    }
    latest = _latest(device, site, raw)
    assert latest.values == {"power_w": 2.0, "soc_pct": 50.0}
    assert latest.seq == 8 and latest.status == "online"
