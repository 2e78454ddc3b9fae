"""Test harness: the real simulator on a socat pty pair, the bridge as a subprocess, the project's
Mosquitto (127.0.0.1:1884, password file + ACL) seen through device-service's account, and a TCP proxy
that can cut the bridge's broker link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt

REPO = Path(__file__).resolve().parents[3]
MQTT_HOST = os.environ.get("NATTERY_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("NATTERY_TEST_MQTT_PORT", "1884"))
SERVICE_USER = os.environ.get("NATTERY_TEST_MQTT_SERVICE_USER", "device-service")
SERVICE_PASSWORD = os.environ.get("NATTERY_TEST_MQTT_SERVICE_PASSWORD", "nattery-dev")
# The broker's directory (password file, pid file): the project's by default, another one when a
# clone or a private broker serves the tests.
MOSQUITTO_DIR = Path(os.environ.get("NATTERY_TEST_MOSQUITTO_DIR", str(REPO / "var" / "mosquitto")))
SITE = "bridge-test"
SITE_PASSWORD = "bridge-test-pw"
# Night in January, no PV: the battery does exactly what the controls say.
SIM_ARGS = ["--pv-kwp", "0", "--start-time", "2026-01-15T02:00:00+00:00"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1):
        return True
    return False


def ensure_site_user(slug: str = SITE, password: str = SITE_PASSWORD) -> None:
    """Add the test site's MQTT user to the project broker's password file, reload it, and wait until
    the broker accepts the login."""
    passwd = MOSQUITTO_DIR / "passwd"
    pidfile = MOSQUITTO_DIR / "mosquitto.pid"
    if not passwd.exists():
        raise RuntimeError("var/mosquitto/passwd missing: run `bash infrastructure/local/setup.sh` first")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), slug, password], check=True)
    deadline = time.monotonic() + 15
    # Already loaded (an earlier session added it): no reload, which every other client of the shared broker
    # would feel. Otherwise reload until the login is accepted; Mosquitto 2.0 loses a SIGHUP that arrives
    # while it is reloading, so one is sent per attempt.
    while not asyncio.run(_login_accepted(slug, password)):
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGHUP)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker still refuses {slug!r} after its password file was reloaded")
        time.sleep(0.2)  # poll interval of this wait, not a guess at how long the reload takes


async def _login_accepted(slug: str, password: str) -> bool:
    try:
        async with aiomqtt.Client(
            MQTT_HOST,
            MQTT_PORT,
            username=slug,
            password=password,
            identifier=f"{slug}.probe-{uuid.uuid4().hex[:8]}",  # the site guard admits <slug>.<name>
            timeout=2,
        ):
            return True
    except aiomqtt.MqttError:
        return False


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class BridgeProcess:
    """``python -m nattery_bridge`` with ``NATTERY_BRIDGE_*`` settings."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "bridge.log"
        self.metrics_port = int(env.get("NATTERY_BRIDGE_METRICS_PORT", "0"))

    def start(self) -> BridgeProcess:
        env = {**os.environ, **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nattery_bridge"], env=env, stdout=out, stderr=out
            )
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def metrics(self) -> dict[str, float]:
        import urllib.request

        out: dict[str, float] = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
        return out

    def metric(self, name: str) -> float | None:
        """One metric, or None while the process has no metrics endpoint yet (just started)."""
        try:
            return self.metrics().get(name)
        except OSError:
            return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def bridge_env(
    workdir: Path, device: str, serial_port: Path, mqtt_port: int = MQTT_PORT, **extra: str
) -> dict[str, str]:
    env = {
        "NATTERY_BRIDGE_SITE": SITE,
        "NATTERY_BRIDGE_DEVICE": device,
        "NATTERY_BRIDGE_DATA_DIR": str(workdir / "data"),
        "NATTERY_BRIDGE_SERIAL__PORT": str(serial_port),
        "NATTERY_BRIDGE_SERIAL__TURNAROUND_MS": "30",
        "NATTERY_BRIDGE_MQTT__HOST": MQTT_HOST,
        "NATTERY_BRIDGE_MQTT__PORT": str(mqtt_port),
        "NATTERY_BRIDGE_MQTT__USERNAME": SITE,
        "NATTERY_BRIDGE_MQTT__PASSWORD": SITE_PASSWORD,
        "NATTERY_BRIDGE_MQTT__KEEPALIVE_S": "5",
        "NATTERY_BRIDGE_MQTT__RECONNECT_MAX_S": "1",
        "NATTERY_BRIDGE_METRICS_PORT": str(free_port()),
        "NATTERY_BRIDGE_TELEMETRY__FAST_INTERVAL_S": "1",
        "NATTERY_BRIDGE_TELEMETRY__SLOW_INTERVAL_S": "5",
        "NATTERY_BRIDGE_DISCOVERY__PREFIX": f"nattery/v1/{SITE}/{device}/ha",
        "NATTERY_BRIDGE_DISCOVERY__ENABLED": "false",  # on in the HA test only (retained configs)
        "NATTERY_BRIDGE_CONTROL_CHECK_INTERVAL_S": "0.5",
        "NATTERY_BRIDGE_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


@dataclass
class Received:
    topic: str
    payload: Any
    at: float
    retain: bool


@dataclass
class Cloud:
    """device-service's view of one device: everything it publishes, and a way to send commands."""

    device: str
    client: aiomqtt.Client
    messages: list[Received] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"nattery/v1/{SITE}/{self.device}"

    def of(self, suffix: str) -> list[Any]:
        t = f"{self.prefix}/{suffix}"
        return [m.payload for m in self.messages if m.topic == t]

    async def wait_for(self, pred: Callable[[], Any], within: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + within
        while True:
            res = pred()
            if res:
                return res
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def command(
        self,
        ctype: str,
        params: dict[str, Any] | None = None,
        *,
        expires_in: float = 120,
        issued_at: datetime | None = None,
        cid: str | None = None,
    ) -> str:
        cid = cid or str(uuid.uuid4())
        issued = issued_at or datetime.now(UTC)
        body = {
            "id": cid,
            "type": ctype,
            "params": params or {},
            "issued_at": iso(issued),
            "expires_at": iso(issued + timedelta(seconds=expires_in)),
        }
        await self.raw_command(json.dumps(body).encode())
        return cid

    async def raw_command(self, payload: bytes) -> None:
        await self.client.publish(f"{self.prefix}/command", payload, qos=1)

    def acks(self, cid: str) -> list[dict[str, Any]]:
        return [a for a in self.of("command/ack") if a.get("id") == cid]

    async def ack(self, cid: str, status: str | tuple[str, ...], within: float = 10) -> dict[str, Any]:
        wanted = (status,) if isinstance(status, str) else status
        found: dict[str, Any] = await self.wait_for(
            lambda: next((a for a in self.acks(cid) if a["status"] in wanted), None),
            within,
            f"ack {wanted} for {cid}",
        )
        return found

    def events(self, code: str) -> list[dict[str, Any]]:
        return [e for e in self.of("event") if e.get("code") == code]

    def telemetry(self) -> list[dict[str, Any]]:
        return self.of("telemetry")

    async def next_telemetry(
        self, pred: Callable[[dict[str, float]], bool], within: float, what: str
    ) -> dict[str, Any]:
        start = len(self.telemetry())

        def check() -> dict[str, Any] | None:
            for t in self.telemetry()[start:]:
                with contextlib.suppress(KeyError):
                    if pred(t["values"]):
                        return t
            return None

        found: dict[str, Any] = await self.wait_for(check, within, what)
        return found


@contextlib.asynccontextmanager
async def cloud(device: str) -> Any:
    async with aiomqtt.Client(
        MQTT_HOST,
        MQTT_PORT,
        username=SERVICE_USER,
        password=SERVICE_PASSWORD,
        identifier=f"test-cloud-{uuid.uuid4().hex[:8]}",
    ) as client:
        c = Cloud(device, client)
        await client.subscribe(f"{c.prefix}/#", qos=1)

        async def reader() -> None:
            async for m in client.messages:
                raw = m.payload
                data = raw if isinstance(raw, bytes | bytearray) else str(raw or "").encode()
                try:
                    payload: Any = json.loads(data) if data else None
                except ValueError:
                    payload = data
                c.messages.append(Received(str(m.topic), payload, time.monotonic(), bool(m.retain)))

        task = asyncio.create_task(reader())
        try:
            yield c
        finally:
            task.cancel()
            with contextlib.suppress(Exception):  # leave no retained state behind
                await client.publish(f"{c.prefix}/state", b"", qos=1, retain=True)
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TcpProxy:
    """A cuttable TCP proxy in front of the broker: ``cut()`` closes every connection and refuses new
    ones (the broker is unreachable), ``restore()`` accepts again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, uw))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(Exception):
                w.close()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        self._conns.discard(writer)
        self._conns.discard(uw)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        await self.cut()
