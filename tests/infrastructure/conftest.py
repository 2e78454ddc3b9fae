"""Fixtures for the infrastructure tests: the project's own Mosquitto (1884/8884) and gateway (8080).

`make test` runs infrastructure/local/setup.sh first; these tests skip cleanly when an instance is not up.
"""

from __future__ import annotations

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


def reload_mosquitto() -> None:
    """What device-service does after editing the password file: SIGHUP re-reads passwd and acl."""
    os.kill(int(PID_FILE.read_text().strip()), signal.SIGHUP)
    time.sleep(0.3)


def add_site(username: str, password: str) -> None:
    subprocess.run(["mosquitto_passwd", "-b", str(PASSWORD_FILE), username, password], check=True)
    reload_mosquitto()


def remove_site(username: str) -> None:
    subprocess.run(["mosquitto_passwd", "-D", str(PASSWORD_FILE), username], check=False)
    reload_mosquitto()


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
        reload_mosquitto()


@pytest.fixture(scope="session")
def gateway() -> str:
    if not port_open(8080):
        pytest.skip("nginx gateway is not running on 127.0.0.1:8080 (run infrastructure/local/setup.sh)")
    return GATEWAY_URL
