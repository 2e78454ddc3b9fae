"""docker-compose.yml is validated here, never run (no Docker engine on the development machines)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
REQUIRED = {
    "NATTERY_POSTGRES_SUPERUSER_PASSWORD": "pg-super",
    "NATTERY_POSTGRES_PASSWORD": "pg-nattery",
    "NATTERY_RABBITMQ_PASSWORD": "rabbit",
    "NATTERY_REDIS_PASSWORD": "redis",
    "NATTERY_INFLUX_ADMIN_PASSWORD": "influx-admin",
    "NATTERY_INFLUX_PASSWORD": "influx",
    "NATTERY_MQTT_DEVICE_PASSWORD": "mqtt",
    "NATTERY_GRAFANA_ADMIN_PASSWORD": "grafana",
    "NATTERY_DASHBOARD_ORIGIN": "https://app.example.com",
    "NATTERY_TLS_DIR": "/etc/nattery/tls",
}
SERVICES = ["device", "trading", "analytics", "user", "integration"]

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATTERY_")}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose_config(REQUIRED)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_config_is_valid_with_the_required_variables(config: dict[str, Any]) -> None:
    expected = {*SERVICES, "gateway", "mosquitto", "rabbitmq", "postgres", "redis", "influxdb"}
    assert expected | {"prometheus", "grafana"} <= set(config["services"])
    device_env = config["services"]["device"]["environment"]
    assert device_env["NATTERY_POSTGRES__DSN"] == "postgresql://nattery:pg-nattery@postgres:5432/nattery"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_config_fails_naming_a_missing_variable(missing: str) -> None:
    result = compose_config({k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0
    # docker-compose 1.29 ends its message with the `:?` text: "... in service "x": set NAME"
    assert re.search(rf"set {missing}\s*$", result.stderr.strip()), result.stderr[-300:]


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume; docker-compose 1.29 prints the short syntax."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            pairs.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
    return pairs


def test_services_build_from_the_root_with_the_one_service_dockerfile(config: dict[str, Any]) -> None:
    for name in SERVICES:
        build = config["services"][name]["build"]
        assert Path(build["context"]).resolve() == REPO_ROOT
        assert build["dockerfile"] == "infrastructure/docker/service.Dockerfile", name
        assert build["args"]["SERVICE"] == name
        port = config["services"][name]["environment"]["NATTERY_PORT"]
        assert build["args"]["PORT"] == port, f"{name} exposes {build['args']['PORT']}, listens on {port}"
        assert (REPO_ROOT / "services" / name / "pyproject.toml").is_file()
        scripts = tomllib.loads((REPO_ROOT / "services" / name / "pyproject.toml").read_text())["project"]
        assert f"nattery-{name}" in scripts["scripts"], f"the image runs nattery-{name}"
    text = (REPO_ROOT / "infrastructure" / "docker" / "service.Dockerfile").read_text()
    assert "--package nattery-${SERVICE}" in text
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER (?!root)\S+", text, re.MULTILINE)
    assert 'ln -s "nattery-${SERVICE}" /app/.venv/bin/nattery-service' in text
    assert 'CMD ["nattery-service"]' in text


def test_every_mounted_repository_file_exists(config: dict[str, Any]) -> None:
    checked = 0
    for name, service in config["services"].items():
        for source, _ in mounts(service):
            path = Path(source)
            if not path.is_absolute() or REPO_ROOT not in path.parents:
                continue  # named volumes and operator-provided paths (NATTERY_TLS_DIR)
            assert path.exists(), f"{name} mounts {path}, which does not exist"
            checked += 1
    assert checked >= 15


def test_every_dependency_waits_for_health(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)
            assert "healthcheck" in services[dependency], dependency


def test_named_volumes_for_all_state(config: dict[str, Any]) -> None:
    assert {"postgres-data", "rabbitmq-data", "influxdb-data", "mosquitto-auth", "mosquitto-data"} <= set(
        config["volumes"]
    )
    device_mounts = set(mounts(config["services"]["device"]))
    mosquitto_mounts = set(mounts(config["services"]["mosquitto"]))
    assert ("mosquitto-auth", "/mosquitto/auth") in device_mounts & mosquitto_mounts
