"""Invalid or unroutable messages are counted and kept for inspection (capped Redis lists), never
allowed to stop the consumer. ``device:rejected`` holds everything; ``device:rejected:{org}`` the
messages of a known site, served to that org's admins."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis

from nattery_shared.retry import FailureLog

log = logging.getLogger(__name__)

REJECTED = Counter("nattery_device_ingest_rejected_total", "MQTT messages rejected", ["suffix", "reason"])

MAX_PAYLOAD_CHARS = 4096
ALL_KEY = "device:rejected"


def org_key(org_id: uuid.UUID) -> str:
    return f"device:rejected:{org_id}"


@dataclass(frozen=True, slots=True)
class Rejection:
    topic: str
    reason: (
        str  # unknown_site | unknown_device | invalid_payload | invalid_topic | revoked_site | write_refused
    )
    error: str
    payload: bytes
    org_id: uuid.UUID | None = None


class RejectedStore:
    def __init__(self, redis: Redis, *, keep: int = 1000) -> None:
        self._redis = redis
        self._keep = keep
        self._failures = FailureLog("keeping rejected messages in redis", log)

    async def keep(self, rejections: list[Rejection]) -> None:
        if not rejections:
            return
        now = datetime.now(UTC).isoformat()
        try:
            pipe = self._redis.pipeline(transaction=False)
            orgs: set[uuid.UUID] = set()
            for r in rejections:
                suffix = r.topic.split("/", 4)[-1] if r.topic.count("/") >= 4 else "?"
                REJECTED.labels(suffix, r.reason).inc()
                record = json.dumps(
                    {
                        "at": now,
                        "topic": r.topic,
                        "reason": r.reason,
                        "error": r.error[:2000],
                        "payload": r.payload[:MAX_PAYLOAD_CHARS].decode("utf-8", "replace"),
                    }
                )
                pipe.lpush(ALL_KEY, record)
                if r.org_id is not None:
                    pipe.lpush(org_key(r.org_id), record)
                    orgs.add(r.org_id)
            pipe.ltrim(ALL_KEY, 0, self._keep - 1)
            for org in orgs:
                pipe.ltrim(org_key(org), 0, self._keep - 1)
            await pipe.execute()
            self._failures.ok()
        except Exception as err:  # Redis down: the metric still counts them; never block ingest
            self._failures.failed(err)

    async def recent(self, org_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(org_key(org_id), 0, limit - 1)
        return [json.loads(item) for item in raw]
