"""`make run`'s fleet provisioning (infrastructure/local/provision_fleet.py) against a gateway that pushes
back: the per-address rate limit's 429 is retried after its Retry-After, transient failures with back-off,
and a site that still cannot be fully provisioned is named on stderr with a non-zero exit.

The transport's waits are recorded instead of slept (what it would wait is what is asserted)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from .conftest import REPO_ROOT


def _load() -> ModuleType:
    path = REPO_ROOT / "infrastructure" / "local" / "provision_fleet.py"
    spec = importlib.util.spec_from_file_location("provision_fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pf = _load()
TOO_MANY = b'{"detail":"too many requests"}\n'


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str]], list[tuple[int, dict[str, str], bytes]]]]:
    """A local HTTP server answering from a script of (status, headers, body); records (method, path)."""
    seen: list[tuple[str, str]] = []
    script: list[tuple[int, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            seen.append((self.command, self.path))
            status, headers, body = script.pop(0)
            self.send_response(status)
            for k, v in {"content-type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, script
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(
    base_url: str, waits: list[float], inner: httpx.BaseTransport | None = None, **kw: Any
) -> httpx.Client:
    transport = pf.RetryingTransport(inner, sleep=waits.append, **kw)
    return httpx.Client(base_url=base_url, transport=transport, timeout=5)


def test_429_is_retried_after_its_retry_after(server: Any) -> None:
    url, seen, script = server
    script += [(429, {"retry-after": "3"}, TOO_MANY), (201, {}, b'{"id": "a"}')]
    waits: list[float] = []
    with client(url, waits) as c:
        r = c.post("/api/integration/sites/x/pv-array", json={"kwp": 4})
    assert r.status_code == 201 and r.json() == {"id": "a"}
    assert seen == [("POST", "/api/integration/sites/x/pv-array")] * 2
    assert len(waits) == 1 and 3.0 <= waits[0] <= 3.25  # Retry-After, plus a little jitter


def test_transient_failures_back_off_and_a_post_is_not_repeated_blindly(server: Any) -> None:
    url, seen, script = server
    script += [(503, {}, b"{}"), (502, {}, b"{}"), (504, {}, b"{}"), (200, {}, b"[]")]
    waits: list[float] = []
    with client(url, waits, jitter_s=0.0) as c:
        assert c.get("/api/device/sites").status_code == 200
        assert waits == [0.5, 1.0, 2.0]  # exponential back-off
        # A POST that reached a service may have done its work: a 502 is reported, not repeated.
        script.append((502, {}, b'{"detail":"bad gateway"}'))
        assert c.post("/api/device/sites", json={}).status_code == 502
    assert len(seen) == 5 and len(waits) == 3


def test_out_of_attempts_the_last_answer_or_error_is_what_the_caller_sees(server: Any) -> None:
    url, seen, script = server
    script += [(429, {"retry-after": "1"}, TOO_MANY)] * 3
    waits: list[float] = []
    with client(url, waits, attempts=3) as c:
        r = c.put("/api/trading/sites/x/battery", json={})
        assert r.status_code == 429 and r.json() == {"detail": "too many requests"}
        assert len(seen) == 3 and len(waits) == 2
    # Nothing listening: the connection is refused, retried, then the error is raised.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    waits.clear()
    with client(closed, waits, attempts=3) as c, pytest.raises(httpx.ConnectError):
        c.post("/api/device/sites", json={})
    assert len(waits) == 2


class FakeGateway:
    """Just enough of the gateway's routes for provision_fleet; ``pv_array`` answers the PV array PUTs."""

    def __init__(self, pv_array: Callable[[str, int], httpx.Response]) -> None:
        self.sites: dict[str, dict[str, Any]] = {}
        self.pv_array = pv_array
        self.pv_calls: dict[str, int] = {}
        self.pv_stored: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        parts = path.strip("/").split("/")
        if path.endswith("/readyz"):
            return httpx.Response(200, json={"status": "ready"})
        if path == "/api/user/auth/login":
            return httpx.Response(200, json={"access_token": "token"})
        if path == "/api/device/sites":
            if method == "GET":
                return httpx.Response(200, json=list(self.sites.values()))
            site = {"id": str(uuid.uuid4()), "slug": body["slug"], "mqtt": {"password": "pw"}}
            self.sites[site["id"]] = site
            return httpx.Response(201, json=site)
        if path == "/api/device/devices":
            return httpx.Response(200, json=[])
        if parts[:3] == ["api", "device", "sites"] and parts[-1] == "devices":
            return httpx.Response(201, json={})
        if path == "/api/trading/tariffs":
            if method == "GET":
                return httpx.Response(200, json=[])
            return httpx.Response(201, json={"tariff_id": str(uuid.uuid4())})
        if parts[:3] == ["api", "trading", "sites"]:
            return httpx.Response(204) if "tariffs" in parts else httpx.Response(200, json={})
        if path == "/api/integration/connections":
            return httpx.Response(200, json=[]) if method == "GET" else httpx.Response(201, json={})
        if parts[:3] == ["api", "integration", "sites"] and parts[-1] == "pv-array":
            slug = self.sites[parts[3]]["slug"]
            self.pv_calls[slug] = self.pv_calls.get(slug, 0) + 1
            response = self.pv_array(slug, self.pv_calls[slug])
            if response.status_code == 200:
                self.pv_stored.add(slug)
            return response
        return httpx.Response(404, json={"detail": f"no route {method} {path}"})


def test_a_site_that_cannot_be_fully_provisioned_fails_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third site's PV array is refused by the rate limit however often it is asked (the run this
    was found in printed `PV array: 429` and carried on); the first two are refused once each."""

    def pv_array(slug: str, call: int) -> httpx.Response:
        if slug == "sim-003" or call == 1:
            return httpx.Response(429, headers={"retry-after": "1"}, content=TOO_MANY)
        return httpx.Response(200, json={})

    gateway = FakeGateway(pv_array)
    waits: list[float] = []
    args = pf.parse_args(["--sites", "3", "--root", str(tmp_path), "--wait-s", "1"])
    with client("http://gateway", waits, httpx.MockTransport(gateway)) as c:
        rc = pf.run(c, args, "admin@example.com", "pw")
    err = capsys.readouterr().err
    assert rc == 2, err  # registered, not fully configured
    assert gateway.pv_stored == {"sim-001", "sim-002"}  # each after one Retry-After
    assert gateway.pv_calls["sim-003"] == pf.RetryingTransport().attempts
    assert "1 of 3 simulated sites not fully provisioned" in err
    assert 'sim-003: PV array: 429 {"detail":"too many requests"}' in err
    assert "sim-001" not in err.split("not fully provisioned")[1]
    assert all(1.0 <= w <= 1.25 for w in waits), waits  # every wait was the Retry-After


def test_the_whole_fleet_provisioned_exits_zero(tmp_path: Path) -> None:
    gateway = FakeGateway(lambda slug, call: httpx.Response(200, json={}))
    args = pf.parse_args(["--sites", "2", "--root", str(tmp_path), "--wait-s", "1"])
    with client("http://gateway", [], httpx.MockTransport(gateway)) as c:
        assert pf.run(c, args, "admin@example.com", "pw") == 0
    assert gateway.pv_stored == {"sim-001", "sim-002"}
    assert (tmp_path / "sim-001" / "bridge.env").read_text().startswith("NATTERY_BRIDGE_MQTT__PASSWORD=pw")
