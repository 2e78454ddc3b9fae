"""The gateway's /ingest location (gateway HTTP ingest, X-API-Key) through a real nginx.

The nginx runs this checkout's configuration (infrastructure/nginx/, rendered as
infrastructure/local/setup.sh renders it) on a port of its own, in front of a stand-in device-service
that records what it receives and answers 401, so the test neither depends on nor reloads the shared
gateway on 8080. Rate limits act before the upstream: within the limit the stand-in's 401, over it 429.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from nattery_shared.testing import eventually, own_address_client, own_loopback_address

from .conftest import REPO_ROOT, port_open

NGINX_DIR = REPO_ROOT / "infrastructure" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists() or not shutil.which("envsubst"), reason="nginx/envsubst not installed"
)

BATCH = {
    "batch_id": "limit-probe",
    "readings": [
        {
            "device_id": "00000000-0000-0000-0000-000000000000",
            "ts": datetime.now(UTC).isoformat(),
            "values": {"battery_soc_pct": 50.0},
        }
    ],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def made_up_key() -> str:
    return "ngw_" + secrets.token_urlsafe(32)


@dataclass
class StandIn:
    """A stand-in device-service: records each request's line and headers, answers 401."""

    port: int
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((head[0], headers))
        body = b'{"error":{"code":"unauthorized","message":"stand-in"}}'
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[StandIn]:
    stand_in = StandIn(free_port())
    server = await asyncio.start_server(stand_in.handle, "127.0.0.1", stand_in.port)
    async with server:
        yield stand_in


def render_gateway(prefix: Path, port: int, device_upstream: int) -> list[str]:
    """This checkout's gateway config under ``prefix``, listening on ``port``; the nginx command line."""
    conf = prefix / "conf"
    (conf / "nattery").mkdir(parents=True)
    for sub in ("logs", "temp"):
        (prefix / sub).mkdir()
    main = (NGINX_DIR / "local.conf.template").read_text()
    main = main.replace("@USER_DIRECTIVE@", "user root;" if os.geteuid() == 0 else "")
    main = main.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    assert f"127.0.0.1:{port}" in main
    (conf / "nginx.conf").write_text(main)
    values = {
        "NATTERY_DEVICE_UPSTREAM": f"127.0.0.1:{device_upstream}",
        "NATTERY_TRADING_UPSTREAM": "127.0.0.1:9",
        "NATTERY_ANALYTICS_UPSTREAM": "127.0.0.1:9",
        "NATTERY_USER_UPSTREAM": "127.0.0.1:9",
        "NATTERY_INTEGRATION_UPSTREAM": "127.0.0.1:9",
        "NATTERY_DASHBOARD_ORIGIN": "http://localhost:3000",
    }
    rendered = subprocess.run(
        ["envsubst", " ".join(f"${{{name}}}" for name in values)],
        input=(NGINX_DIR / "nattery-http.conf.template").read_text(),
        env={**os.environ, **values},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (conf / "nattery-http.conf").write_text(rendered)
    for name in ("headers.conf", "locations.conf"):
        shutil.copy(NGINX_DIR / "nattery" / name, conf / "nattery" / name)
    command = [NGINX, "-p", str(prefix), "-e", "logs/error.log", "-c", "conf/nginx.conf"]
    subprocess.run([*command, "-t", "-q"], check=True, capture_output=True)
    return command


@pytest.fixture
async def own_gateway(upstream: StandIn, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    command = await asyncio.to_thread(render_gateway, tmp_path, port, upstream.port)
    process = await asyncio.create_subprocess_exec(*command, "-g", "daemon off;")
    try:
        await eventually(lambda: process.returncode is not None or port_open(port), timeout_s=10)
        assert process.returncode is None, (tmp_path / "logs" / "error.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_ingest_is_rate_limited_per_gateway_key(own_gateway: str, upstream: StandIn) -> None:
    key, other_key = made_up_key(), made_up_key()
    # Fewer requests than the per-address burst (40): only the per-key limit (2 r/s, bursts of 10)
    # can answer 429 here.
    async with own_address_client(own_gateway, timeout=10, limits=httpx.Limits(max_connections=30)) as client:
        responses = await asyncio.gather(
            *(client.post("/ingest", json=BATCH, headers={"X-API-Key": key}) for _ in range(30))
        )
        statuses = [r.status_code for r in responses]
        limited = [r for r in responses if r.status_code == 429]
        assert limited, statuses
        assert set(statuses) == {401, 429}, statuses  # the burst itself reached the service
        assert limited[0].headers["Retry-After"] == "1"
        assert limited[0].json() == {"detail": "too many requests"}
        assert len(upstream.requests) == statuses.count(401)

        # The same key on the /api/device/ingest spelling shares its bucket.
        aliased = await client.post("/api/device/ingest", json=BATCH, headers={"X-API-Key": key})
        assert aliased.status_code == 429

        # Another gateway's key, from the same address, is not held back by the first one's bucket.
        other = await client.post("/ingest", json=BATCH, headers={"X-API-Key": other_key})
        assert other.status_code == 401, other.text


async def test_ingest_forwards_the_peer_address_as_x_real_ip(own_gateway: str, upstream: StandIn) -> None:
    address = own_loopback_address()
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=own_gateway, transport=transport, timeout=10) as client:
        forged = {"X-API-Key": made_up_key(), "X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7"}
        response = await client.post("/ingest", json=BATCH, headers=forged)
        assert response.status_code == 401
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # Only the exact path is routed: nothing else of device-service is reachable under /ingest.
        assert (await client.get("/ingest/rejected")).status_code == 404

    line, headers = await eventually(lambda: upstream.requests[-1] if upstream.requests else None)
    assert line.startswith("POST /ingest ")
    # The caller's X-Real-IP is replaced by the address nginx saw; the service believes only that one.
    assert headers["x-real-ip"] == address
    assert headers["x-forwarded-for"].split(",")[-1].strip() == address
    assert headers["x-api-key"] == forged["X-API-Key"]
    assert len(upstream.requests) == 1
