"""Root conftest: shared fixtures for every package's tests (real local servers, see docs/CONVENTIONS.md).

Each test session starts from empty service schemas in the ``nattery_test`` database, migrated to head
by each service's own migrations, so a migration edited during development, or rows left by an earlier
run, can never make a run pass or fail by accident. Redis db 15 is flushed for the same reason.
Because of that reset, sessions on one machine take turns: a machine-wide lock
(``nattery_shared.testing.lock_test_servers``) makes a second session, or ``bench/ingest.py``, wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import psycopg
import pytest
import pytest_asyncio
import redis

from nattery_shared import migrations
from nattery_shared.testing import TEST_PG_DSN, TEST_REDIS_URL, lock_test_servers

pytest_plugins = ["nattery_shared.testing", "pytester"]

ROOT = Path(__file__).parent
# service -> its PostgreSQL schema
SERVICE_SCHEMAS = {
    "device": "device",
    "trading": "trading",
    "analytics": "analytics",
    "user": "users",
    "integration": "integration",
}


_lock_fd: int | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _lock_fd
    if hasattr(session.config, "workerinput"):  # xdist workers: the controller already reset
        return
    # Held until this process ends: another session (or a benchmark) waits rather than wiping ours.
    _lock_fd = lock_test_servers("a pytest session")
    with psycopg.connect(TEST_PG_DSN, autocommit=True) as conn:
        for schema in SERVICE_SCHEMAS.values():
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    for service, schema in SERVICE_SCHEMAS.items():
        migrations.upgrade(ROOT / f"services/{service}/src/nattery_{service}/migrations", TEST_PG_DSN, schema)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()


# --- Session end: no hang on a leaked AMQP connection ------------------------------------------------
# aio-pika 10's RobustConnection swallows the cancel of its reconnect task while it is reconnecting
# (robust_connection.py: "Connection attempt ... cancelled. Reconnecting"), so a connection a test left
# open, caught reconnecting when pytest-asyncio cancels the session loop's tasks, keeps that loop
# running for ever: CI once hung there for 90 minutes after the last test. Close what is left first,
# say what leaked, and never let the session's teardown outlive a watchdog.
SESSION_TEARDOWN_LIMIT_S = 180.0


@pytest_asyncio.fixture(scope="session", autouse=True, loop_scope="session")
async def _close_leaked_amqp_connections() -> AsyncIterator[None]:
    yield
    leaked = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, aio_pika.RobustConnection) and not getattr(obj, "_close_called", False)
    ]
    for connection in leaked:
        print(f"\nconftest: closing an AMQP connection a test left open: {connection!r}", file=sys.__stderr__)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout=5)


def _teardown_watchdog(limit_s: float) -> None:
    try:  # the real stderr: pytest's capture may have replaced sys.stderr with something without a fd
        stderr = sys.__stderr__ or sys.stdout
        print(
            f"\nconftest: session teardown still running after {limit_s:.0f} s; stacks:",
            file=stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=stderr)
    finally:
        os._exit(3)


_watchdog: threading.Timer | None = None


def _start_teardown_watchdog() -> None:
    global _watchdog
    if _watchdog is None:
        _watchdog = threading.Timer(
            SESSION_TEARDOWN_LIMIT_S, _teardown_watchdog, args=(SESSION_TEARDOWN_LIMIT_S,)
        )
        _watchdog.daemon = True  # the process exits normally once teardown is over
        _watchdog.start()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None:  # the last test's teardown also tears down the session's fixtures and loop
        _start_teardown_watchdog()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _start_teardown_watchdog()
