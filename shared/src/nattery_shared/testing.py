"""Pytest fixtures shared by every package's tests (loaded from the root ``conftest.py``).

They point at the real local servers (see docs/CONVENTIONS.md): PostgreSQL database ``nattery_test``,
RabbitMQ vhost ``nattery_test``, Redis db 15, the project's InfluxDB (database ``nattery_test``) and
Mosquitto (port 1884). ``make test`` starts whatever is not running before pytest.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from nattery_shared.settings import (
    AuthSettings,
    Environment,
    InfluxSettings,
    MqttSettings,
    PostgresSettings,
    RabbitSettings,
    RedisSettings,
    ServiceSettings,
)

TEST_PG_DSN = "postgresql://nattery:nattery-dev@127.0.0.1:5432/nattery_test"
TEST_RABBIT_URL = "amqp://nattery:nattery-dev@127.0.0.1:5672/nattery_test"
TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
TEST_INFLUX_URL = "http://127.0.0.1:8086"
TEST_INFLUX_DB = "nattery_test"
TEST_MQTT_PORT = 1884
AUDIENCE = "nattery"
ISSUER = "nattery-user"


# One machine-wide lock for everything that resets or fills the shared test servers (the
# ``nattery_test`` database and vhost, Redis db 15): a second ``make test`` or a benchmark started
# meanwhile waits instead of wiping the first one's schemas mid-run.
TEST_SERVERS_LOCK = Path(tempfile.gettempdir()) / "nattery_test.lock"


def lock_test_servers(what: str) -> int:
    """Take the test-servers lock (waiting, with a message, while another run holds it).

    Returns the open file descriptor; the lock lasts until it is closed or the process ends.
    """
    fd = os.open(TEST_SERVERS_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        print(f"{what}: waiting for {holder} to finish with the test servers", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what} (pid {os.getpid()})".encode(), 0)
    return fd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return data


class TestIssuer:
    """Mints access tokens like user-service does and serves their JWKS over local HTTP."""

    __test__ = False

    def __init__(self) -> None:
        self.keys = [SigningKey(kid="test-1")]
        self.port = free_port()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"keys": [k.jwk() for k in issuer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def token(
        self,
        *,
        role: str = "viewer",
        org: uuid.UUID | str | None = None,
        sub: str | None = None,
        audience: str = AUDIENCE,
        expires_in_s: int = 900,
        key: SigningKey | None = None,
        **extra: Any,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        claims = {
            "sub": sub or str(uuid.uuid4()),
            "org": str(org or uuid.uuid4()),
            "role": role,
            "aud": audience,
            "iss": ISSUER,
            "iat": now,
            "exp": now + expires_in_s,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="session")
def test_issuer() -> Iterator[TestIssuer]:
    issuer = TestIssuer()
    yield issuer
    issuer.close()


def test_settings_kwargs(issuer: TestIssuer | None = None) -> dict[str, Any]:
    """Settings for a service under test, pointing at the local test servers."""
    kwargs: dict[str, Any] = {
        "environment": Environment.TEST,
        "postgres": PostgresSettings(dsn=SecretStr(TEST_PG_DSN), pool_min_size=1, pool_max_size=4),
        "redis": RedisSettings(url=SecretStr(TEST_REDIS_URL)),
        "rabbit": RabbitSettings(url=SecretStr(TEST_RABBIT_URL)),
        "influx": InfluxSettings(url=TEST_INFLUX_URL, database=TEST_INFLUX_DB),
        "mqtt": MqttSettings(
            port=TEST_MQTT_PORT, username="device-service", password=SecretStr("nattery-dev")
        ),
    }
    if issuer is not None:
        kwargs["auth"] = AuthSettings(jwks_url=issuer.jwks_url, audience=AUDIENCE, issuer=ISSUER)
    return kwargs


test_settings_kwargs.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def base_test_settings(test_issuer: TestIssuer) -> ServiceSettings:
    return ServiceSettings(**test_settings_kwargs(test_issuer))


def test_env(issuer: TestIssuer | None = None) -> dict[str, str]:
    """Environment variables pointing a service subprocess at the local test servers."""
    env = {
        "NATTERY_ENVIRONMENT": "test",
        "NATTERY_POSTGRES__DSN": TEST_PG_DSN,
        "NATTERY_REDIS__URL": TEST_REDIS_URL,
        "NATTERY_RABBIT__URL": TEST_RABBIT_URL,
        "NATTERY_INFLUX__URL": TEST_INFLUX_URL,
        "NATTERY_INFLUX__DATABASE": TEST_INFLUX_DB,
        "NATTERY_MQTT__PORT": str(TEST_MQTT_PORT),
        "NATTERY_MQTT__USERNAME": "device-service",
        "NATTERY_MQTT__PASSWORD": "nattery-dev",
    }
    if issuer is not None:
        env["NATTERY_AUTH__JWKS_URL"] = issuer.jwks_url
    return env


class TcpProxy:
    """A TCP proxy on a free port that a test can cut and restore, to play a server going away
    without stopping the shared server other tests use. While cut it keeps its port and drops every
    connection at once, so no other test's server can take the port and turn the outage into a
    connection somewhere else."""

    __test__ = False

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.up = True
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not self.up:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._open.update({writer, up_writer})
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            self._open.difference_update({writer, up_writer})

        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Drop open connections and every new one until :meth:`restore`."""
        self.up = False
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            self._server = None


async def eventually(check: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.1) -> Any:
    """Await ``check()`` (sync or async) until it returns something truthy; its value is returned."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last: {last!r})")


def bearer(issuer: TestIssuer, org: uuid.UUID, role: str = "admin") -> dict[str, str]:
    """An Authorization header with a token of ``role`` in ``org``."""
    return {"Authorization": f"Bearer {issuer.token(role=role, org=org)}"}


test_env.__test__ = False  # type: ignore[attr-defined]


# `make test` and CI set NATTERY_TEST_STRICT=1: there a test that skips (a server missing, a port taken)
# fails instead, so a run can never pass by quietly testing less. A bare `pytest` on a developer's
# machine keeps its skips.
STRICT_ENV = "NATTERY_TEST_STRICT"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(STRICT_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and {STRICT_ENV}=1 (make test) turns a skip into a failure: {reason}"


_loopback_counter = iter(range(2, 250))


def own_loopback_address() -> str:
    """A loopback source address of this test's own (127.0.<pid % 250>.N), for the gateway's
    per-address rate limit: a test that bursts past the limit drains nobody else's bucket, so no
    test has to sleep for the bucket to refill. Linux routes all of 127.0.0.0/8 to loopback."""
    return f"127.0.{os.getpid() % 250 + 1}.{next(_loopback_counter)}"


def own_address_client(base_url: str, **kwargs: Any) -> Any:
    """An ``httpx.AsyncClient`` whose connections come from :func:`own_loopback_address`."""
    import httpx

    transport = httpx.AsyncHTTPTransport(
        local_address=own_loopback_address(), limits=kwargs.pop("limits", None) or httpx.Limits()
    )
    return httpx.AsyncClient(base_url=base_url, transport=transport, **kwargs)
