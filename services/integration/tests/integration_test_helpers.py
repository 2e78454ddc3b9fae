"""Helpers of the integration-service tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import SecretStr

from nattery_integration.settings import (
    IntegrationSection,
    IntegrationSettings,
    JobSettings,
    WebhookSettings,
)
from nattery_shared.testing import TestIssuer, free_port, test_settings_kwargs

TEST_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test vector's


def integration_settings(issuer: TestIssuer | None = None, **section: Any) -> IntegrationSettings:
    """Settings against the local test servers; a unique Redis prefix per call so tests never share
    rate-limit buckets or provider health. ``section`` overrides IntegrationSection fields."""
    values: dict[str, Any] = {
        "redis_prefix": f"nattery:integration:test-{uuid.uuid4().hex[:8]}:",
        "webhooks": WebhookSettings(secrets={"test": SecretStr(TEST_WEBHOOK_SECRET)}, worker_poll_s=0.05),
        "jobs": JobSettings(poll_s=0.05),
        **section,
    }
    return IntegrationSettings(**test_settings_kwargs(issuer), integration=IntegrationSection(**values))


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)  # bytes/str sent as is, anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # answer this late (a slow provider)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


class ScriptedServer:
    """A local HTTP server standing in for a provider: it answers with the scripted replies in order
    (the last one repeats, or ``default``), or ``responder(seen)`` when set, and records every request
    with its arrival time."""

    def __init__(self, default: Reply | None = None) -> None:
        self.script: list[Reply] = []
        self.default = default or Reply()
        self.responder: Callable[[Seen], Reply] | None = None
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(self.command, self.path, dict(self.headers.items()), time.monotonic())
                with server._lock:
                    server.seen.append(seen)
                    if server.responder is not None:
                        reply = server.responder(seen)
                    elif server.script:
                        reply = server.script.pop(0)
                    else:
                        reply = server.default
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body = reply.body
                raw = (
                    body
                    if isinstance(body, bytes)
                    else body.encode()
                    if isinstance(body, str)
                    else json.dumps(body).encode()
                )
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(raw)))
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            do_GET = _serve
            do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.startswith(path_prefix))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
