"""The Redis layout of presence, owned here alone: latest values and status per device, last seen.

Latest values: one hash per device (``device:latest:<id>``), one hash field per group of fields the
device publishes (the bridge publishes fast and slow groups), ``g:<id of the group's field names>`` =
``epoch|iso ts|seq|values json``, plus ``status`` and ``status_at``. Last seen: one sorted set of
device id -> epoch seconds of its newest sample. Readers (the telemetry API) go through :func:`read`,
which merges the groups, so no other module knows this layout.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

LAST_SEEN_KEY = "device:lastseen"  # sorted set: device id -> last sample epoch seconds


# Latest values: one hash per device, one hash field per group of fields the device publishes (the
# bridge publishes fast and slow groups), "g:<id of the group's field names>" = "epoch|iso ts|seq|values
# json". A group only moves forward in time: a replayed (older) sample never overwrites a newer one,
# whichever replica writes it. Readers merge the groups (newest value of each field wins, merge()
# below). The compare is a few string operations per device (no JSON in Redis): the
# per-field cjson merge this replaces cost redis-server ~34 % of a core at 10,000 msg/s from 2,000
# devices; this costs ~3 % (services/device/README.md, "Benchmarks").
SET_LATEST_LUA = """
for i, key in ipairs(KEYS) do
  local field, record = ARGV[2 * i - 1], ARGV[2 * i]
  local stored = redis.call('HGET', key, field)
  if not stored or tonumber(string.sub(stored, 1, string.find(stored, '|', 1, true) - 1))
      <= tonumber(string.sub(record, 1, string.find(record, '|', 1, true) - 1)) then
    redis.call('HSET', key, field, record)
  end
end
return 0
"""
LATEST_CHUNK = 500  # devices per EVAL: Redis runs a script without interruption


def latest_key(device_id: uuid.UUID) -> str:
    return f"device:latest:{device_id}"


def group_field(names: tuple[str, ...]) -> str:
    """Hash field of a group of telemetry fields: short and stable across replicas and restarts."""
    return "g:" + hashlib.blake2b(",".join(names).encode(), digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class LatestRecord:
    """A device's latest values merged across its groups: the newest value of each field wins; ``ts``
    and ``seq`` are those of the newest sample."""

    ts: str | None = None
    seq: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    status: str | None = None
    status_at: str | None = None


def merge(raw: dict[Any, Any]) -> LatestRecord:
    """One device's hash (as ``HGETALL`` returns it) as a :class:`LatestRecord`."""
    get = {k.decode(): v.decode() for k, v in raw.items()}
    groups: list[tuple[float, str, int, str]] = []
    for key, record in get.items():
        if key.startswith("g:"):
            epoch, group_ts, group_seq, values_json = record.split("|", 3)
            groups.append((float(epoch), group_ts, int(group_seq), values_json))
    if "values" in get and "ts" in get:  # written before the group layout: one merged object
        groups.append((float(get.get("ts_epoch", "-inf")), get["ts"], int(get.get("seq", 0)), get["values"]))
    groups.sort(key=lambda g: g[0])
    values: dict[str, float] = {}
    ts: str | None = None
    seq: int | None = None
    for _epoch, group_ts, group_seq, values_json in groups:
        values.update(json.loads(values_json))
        ts, seq = group_ts, group_seq
    return LatestRecord(
        ts=ts, seq=seq, values=values, status=get.get("status"), status_at=get.get("status_at")
    )


async def read(redis: Redis, device_ids: Sequence[uuid.UUID]) -> list[LatestRecord]:
    """The latest record of each device, in the order given (one pipeline)."""
    if not device_ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for device_id in device_ids:
        pipe.hgetall(latest_key(device_id))
    return [merge(raw) for raw in await pipe.execute()]
