"""Integration-service benchmarks (``make bench-integration``): JSON lines (``bench/common.py``).

- ``integration.webhook_accept_p99_ms``: a signed Standard Webhooks delivery (HMAC-SHA256 over the raw
  body) POSTed to ``/webhooks/{provider}`` until its 200, which the service sends only once the delivery
  is stored in PostgreSQL. Offered open-loop at ``--rate`` deliveries/s (default 500) for ``--seconds``
  (default 10): each delivery has its scheduled send time, and its latency counts from that time, so a
  server that falls behind shows it (no coordinated omission). The service runs as its own process
  (``nattery-integration serve``, uvicorn, one worker) against the local test PostgreSQL/Redis/RabbitMQ,
  with its webhook worker on (deliveries are processed, as unhandled, while the load runs) and its
  scheduled jobs off. The achieved rate (200s per second of the run) is printed beside it.

    uv run python bench/integration.py [--rate 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from common import emit, note, percentile

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, free_port, lock_test_servers, test_env

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"bench-webhook-secret-32-bytes!!!").decode()
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
TARGET_MS = 50.0


def signed(body: bytes) -> dict[str, str]:
    delivery_id = f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    mac = hmac.new(KEY, f"{delivery_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"integration service exited with {proc.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("integration service not ready within 60 s")


async def offer(base: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """(latencies in s of the 200s, failures, achieved 200s per s)."""
    total = int(rate * seconds)
    body = json.dumps({"type": "dispatch.created", "data": {"site": "bench", "power_kw": 3.5}}).encode()
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        # warm the connection pool and the service (not measured)
        await asyncio.gather(
            *(client.post("/webhooks/bench", content=body, headers=signed(body)) for _ in range(50))
        )
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            nonlocal failures
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.post("/webhooks/bench", content=body, headers=signed(body))
            except httpx.HTTPError:
                failures += 1
                return
            if response.status_code == 200 and response.json().get("status") == "accepted":
                latencies.append(time.perf_counter() - scheduled)
            else:
                failures += 1

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    return latencies, failures, len(latencies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    _lock = lock_test_servers("bench/integration.py")
    migrations.upgrade(
        ROOT / "services/integration/src/nattery_integration/migrations", TEST_PG_DSN, "integration"
    )
    port = free_port()
    env = {
        **os.environ,
        **test_env(),
        "NATTERY_PORT": str(port),
        "NATTERY_LOG_LEVEL": "WARNING",
        "NATTERY_INTEGRATION__WEBHOOKS__SECRETS": json.dumps({"bench": SECRET}),
        "NATTERY_INTEGRATION__JOBS__ENABLED": "false",
        "NATTERY_INTEGRATION__REDIS_PREFIX": f"nattery:integration:bench-{uuid.uuid4().hex[:6]}:",
    }
    note("integration", f"starting nattery-integration on port {port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nattery_integration", "serve"], env=env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"

    async def measure() -> tuple[list[float], int, float]:
        await wait_ready(base, proc)
        note("integration", f"offering {args.rate:g} signed deliveries/s for {args.seconds:g} s")
        return await offer(base, args.rate, args.seconds)

    try:
        latencies, failures, achieved = asyncio.run(measure())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    offered = int(args.rate * args.seconds)
    measured = bool(latencies or failures)
    emit(
        "integration.webhook_accept_p99_ms",
        round(percentile(latencies, 99, missing=failures) * 1000, 2) if measured else None,
        "ms",
        target=f"<= {TARGET_MS:g} ms at {args.rate:g}/s",
        reference="signed delivery to 200 (stored in PostgreSQL); latency from the scheduled send time",
        offered_per_s=args.rate,
        achieved_per_s=round(achieved, 1),
        deliveries=offered,
        failures=failures,
        p50_ms=round(percentile(latencies, 50) * 1000, 2) if latencies else None,
        p999_ms=round(percentile(latencies, 99.9, missing=failures) * 1000, 2) if measured else None,
    )


if __name__ == "__main__":
    main()
