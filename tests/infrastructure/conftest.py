"""Fixtures for the infrastructure tests: the project's own Mosquitto (1884/8884) and gateway (8080).

`make test` runs infrastructure/local/setup.sh first; these tests skip cleanly when an instance is not up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = REPO_ROOT / "var" / "mosquitto"
PASSWORD_FILE = MOSQUITTO_DIR / "passwd"
PID_FILE = MOSQUITTO_DIR / "mosquitto.pid"
CA_FILE = MOSQUITTO_DIR / "certs" / "ca.crt"
MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1884
MQTT_TLS_PORT = 8884
SERVICE_USER = "device-service"
SERVICE_PASSWORD = "nattery-dev"
GATEWAY_URL = "http://127.0.0.1:8080"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class SiteAccount:
    username: str
    password: str

    @property
    def prefix(self) -> str:
        return f"nattery/v1/{self.username}"


def connack(username: str, password: str) -> int:
    """The CONNACK return code of a bare MQTT 3.1.1 CONNECT with these credentials (0: accepted;
    -1: closed without one). A site's client id must be ``<slug>.<name>`` (site guard)."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    client_id = f"{username}.probe-{secrets.token_hex(4)}"
    body = field("MQTT") + bytes([4, 0xC2, 0, 30]) + field(client_id) + field(username) + field(password)
    length, n = b"", len(body)
    while True:  # MQTT variable-length integer
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=5) as sock:
        sock.sendall(b"\x10" + length + body)
        reply = b""
        while len(reply) < 4 and (chunk := sock.recv(4 - len(reply))):
            reply += chunk
        if len(reply) < 4 or reply[0] != 0x20:
            return -1
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return reply[3]


def reload_mosquitto(username: str, password: str, *, accepted: bool, timeout_s: float = 10.0) -> None:
    """What device-service does after editing the password file: SIGHUP re-reads passwd and acl.
    Mosquitto reloads on its next loop turn, so wait until ``username`` is accepted (or refused)."""
    os.kill(int(PID_FILE.read_text().strip()), signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while (connack(username, password) == 0) != accepted:
        assert time.monotonic() < deadline, (
            f"mosquitto reload: {username} still {'refused' if accepted else 'accepted'}"
        )
        time.sleep(0.05)  # polling interval


def add_site(username: str, password: str) -> None:
    subprocess.run(["mosquitto_passwd", "-b", str(PASSWORD_FILE), username, password], check=True)
    reload_mosquitto(username, password, accepted=True)


def remove_site(username: str, password: str) -> None:
    subprocess.run(["mosquitto_passwd", "-D", str(PASSWORD_FILE), username], check=False)
    reload_mosquitto(username, password, accepted=False)


@pytest.fixture(scope="session")
def mosquitto() -> None:
    if not (port_open(MQTT_PORT) and PID_FILE.exists() and PASSWORD_FILE.exists()):
        pytest.skip("project Mosquitto is not running (run infrastructure/local/setup.sh)")


@pytest.fixture
def make_site(mosquitto: None) -> Iterator[type[SiteAccount] | object]:
    """Creates temporary site accounts in var/mosquitto/passwd and removes them afterwards."""
    created: list[SiteAccount] = []

    def factory() -> SiteAccount:
        site = SiteAccount(f"test-site-{secrets.token_hex(4)}", secrets.token_urlsafe(12))
        add_site(site.username, site.password)
        created.append(site)
        return site

    yield factory
    for site in created:
        subprocess.run(["mosquitto_passwd", "-D", str(PASSWORD_FILE), site.username], check=False)
    if created:
        reload_mosquitto(created[-1].username, created[-1].password, accepted=False)


@pytest.fixture(scope="session")
def gateway() -> str:
    if not port_open(8080):
        pytest.skip("nginx gateway is not running on 127.0.0.1:8080 (run infrastructure/local/setup.sh)")
    return GATEWAY_URL
