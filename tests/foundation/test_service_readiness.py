"""Each service's /readyz answers 200 through the real nginx gateway; pointed at a closed port for
one dependency, it answers 503 naming that dependency."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from nattery_shared.testing import TestIssuer, free_port, test_env

SERVICES = {"device": 3001, "trading": 3002, "analytics": 3003, "user": 3004, "integration": 3005}
GATEWAY = "http://127.0.0.1:8080"


def start_service(name: str, port: int, issuer: TestIssuer, **overrides: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **test_env(issuer),
        "NATTERY_PORT": str(port),
        "NATTERY_LOG_LEVEL": "WARNING",
        **overrides,
    }
    return subprocess.Popen(
        [sys.executable, "-m", f"nattery_{name}", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(url: str, status: int, timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=5)
            if last.status_code == status:
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status} in {timeout_s}s; last: {last and last.text}")


@pytest.fixture(scope="module")
def services(test_issuer: TestIssuer) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    for name, port in SERVICES.items():
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            continue
        pytest.fail(f"port {port} for {name} is taken: stop `make run` before `make test`")
    procs = {name: start_service(name, port, test_issuer) for name, port in SERVICES.items()}
    yield procs
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_readyz_through_gateway(services: dict[str, subprocess.Popen[bytes]], name: str) -> None:
    response = wait_for(f"{GATEWAY}/api/{name}/readyz", 200)
    body = response.json()
    assert body["status"] == "ready" and body["failing"] == []
    assert "postgres" in body["checks"] and "rabbitmq" in body["checks"]
    assert response.headers.get("x-request-id")


def test_metrics_not_exposed_through_gateway(services: dict[str, subprocess.Popen[bytes]]) -> None:
    wait_for(f"{GATEWAY}/api/device/readyz", 200)
    assert httpx.get(f"{GATEWAY}/api/device/metrics").status_code == 404
    direct = httpx.get(f"http://127.0.0.1:{SERVICES['device']}/metrics")
    assert direct.status_code == 200 and "nattery_http_requests_total" in direct.text


def test_readyz_names_the_failing_dependency(test_issuer: TestIssuer) -> None:
    closed = free_port()
    port = free_port()
    proc = start_service("device", port, test_issuer, NATTERY_REDIS__URL=f"redis://127.0.0.1:{closed}/0")
    try:
        # Other dependencies connect in the background: wait until only the closed one fails.
        deadline = time.monotonic() + 60
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            response = wait_for(f"http://127.0.0.1:{port}/readyz", 503)
            body = response.json()
            if body["failing"] == ["redis"]:
                break
            time.sleep(0.3)
        assert body["failing"] == ["redis"], body
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert checks["postgres"] == "ok"
        assert checks["redis"].startswith("failing")
    finally:
        proc.terminate()
        proc.wait(10)
