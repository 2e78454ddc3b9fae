"""Deployment files follow balena's compose subset (platform.md §8) and match the bridge's settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nattery_bridge.settings import BridgeSettings

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "infrastructure" / "balena" / "docker-compose.yml"
BALENA = REPO / "balena.yml"
DOCKERFILE = REPO / "edge" / "modbus-bridge" / "Dockerfile"

# Fields balena's supervisor understands (balena-io/docs reference/supervisor/docker-compose); version 3
# fields are not supported.
ALLOWED_SERVICE_KEYS = {
    "build",
    "image",
    "devices",
    "cap_add",
    "cap_drop",
    "privileged",
    "network_mode",
    "volumes",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "tmpfs",
    "environment",
    "ports",
    "expose",
    "command",
    "entrypoint",
    "working_dir",
    "user",
    "stop_signal",
    "stop_grace_period",
    "init",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_is_balena_compatible(compose: dict[str, Any]) -> None:
    # comments may mention ${VAR}; the YAML itself must not use it
    text = "\n".join(line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines())
    assert str(compose["version"]) == "2.4"
    assert "${" not in text and not re.search(r"\$[A-Za-z_]", text), "balena does no variable substitution"
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in compose["services"].items():
        assert set(svc) <= ALLOWED_SERVICE_KEYS, f"{name}: unsupported keys {set(svc) - ALLOWED_SERVICE_KEYS}"
        for vol in svc.get("volumes", []):
            assert isinstance(vol, str), "short syntax only"
            source = vol.split(":", 1)[0]
            assert not source.startswith(("/", ".", "~")), f"{name}: bind mount {vol} not supported"
            assert source in named, f"{name}: volume {source} not declared"
        assert svc.get("restart", "always") in ("always", "unless-stopped", "on-failure")
        deps = svc.get("depends_on", [])
        assert isinstance(deps, list), "depends_on: array form only"


def test_bridge_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["modbus-bridge"]
    build = svc["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert svc["restart"] == "always"
    devices = svc["devices"]
    assert any(d.split(":")[0].startswith("/dev/tty") for d in devices)
    env = {k: str(v) for k, v in svc["environment"].items()}
    port = env["NATTERY_BRIDGE_SERIAL__PORT"]
    assert any(d.split(":")[1] == port for d in devices), "the configured port must be the mapped device"
    data_volume = next(v for v in svc["volumes"] if v.split(":")[1] == env["NATTERY_BRIDGE_DATA_DIR"])
    assert data_volume.split(":")[0] == "bridge-data"  # the outbox survives releases
    # every variable is one the bridge understands
    for key in env:
        assert key.startswith("NATTERY_BRIDGE_")
        top = key.removeprefix("NATTERY_BRIDGE_").split("__")[0].lower()
        assert top in BridgeSettings.model_fields, key
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        s = BridgeSettings()
        assert str(s.data_dir) == "/data" and s.serial.port == port and s.metrics_port == 9108


def test_balena_yml() -> None:
    data = yaml.safe_load(BALENA.read_text())
    assert data["type"] == "sw.application"
    assert data["name"] and re.match(r"^\d+\.\d+\.\d+$", str(data["version"]))
    d = data["data"]
    assert d["defaultDeviceType"] in d["supportedDeviceTypes"]
    assert all(t.endswith("-64") or t == "raspberrypi5" for t in d["supportedDeviceTypes"]), "arm64 only"
    for var in d.get("applicationEnvironmentVariables", []):
        ((key, _),) = var.items()
        assert key.startswith("NATTERY_BRIDGE_")
        top = key.removeprefix("NATTERY_BRIDGE_").split("__")[0].lower()
        assert top in BridgeSettings.model_fields, key
    assert "${" not in "\n".join(line.split("#", 1)[0] for line in BALENA.read_text().splitlines())


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert "uv sync --frozen --no-dev" in text and "--package nattery-modbus-bridge" in text
    assert re.search(r'^CMD \["modbus-bridge"\]', text, re.M)
    assert "USER nattery" in text
