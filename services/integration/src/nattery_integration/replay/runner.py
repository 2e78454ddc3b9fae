"""Run the replay app on a local port: in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from nattery_integration.replay.server import BASE_PATHS, ReplayState, create_replay_app


class ReplayServer:
    """A replay server on ``127.0.0.1:port`` (a free one by default) with its state at hand."""

    def __init__(self, port: int = 0, state: ReplayState | None = None) -> None:
        self.state = state or ReplayState()
        self.app = create_replay_app(self.state)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        # Bound here, so the port is known (and taken) before the thread starts serving on it.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), name="replay", daemon=True
        )

    def start(self) -> ReplayServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:  # uvicorn's own flag; no event to wait on across threads
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("replay server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def base_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_PATHS[provider]}"


@contextmanager
def replay_server(port: int = 0, state: ReplayState | None = None) -> Iterator[ReplayServer]:
    server = ReplayServer(port, state).start()
    try:
        yield server
    finally:
        server.stop()
