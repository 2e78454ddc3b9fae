"""Local SQLite state: the store-and-forward outbox, telemetry ``seq``, seen commands, persisted limits
and the active control.

One connection, used from the event loop thread only (every statement is a few hundred microseconds on a
Pi's SD card in WAL mode with ``synchronous=NORMAL``; a power cut can lose the last transaction, never
corrupt the file).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROW_OVERHEAD_BYTES = 64  # rough per-row cost on disk beyond the payload and topic

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    received REAL NOT NULL,
    ack TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    kind: str
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class DropReport:
    rows: int
    bytes: int


class Store:
    def __init__(self, path: Path, budget_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.budget_bytes = budget_bytes
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self.outbox_rows: int = int(row[0])
        self.outbox_bytes: int = int(row[1])
        self.dropped_rows_total = 0

    def close(self) -> None:
        self._db.close()

    # ---- meta ----
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_json(self, key: str) -> Any:
        raw = self.get_meta(key)
        return None if raw is None else json.loads(raw)

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, None if value is None else json.dumps(value))

    # ---- telemetry seq + outbox ----
    def next_seq(self) -> int:
        """The next telemetry sequence number, persisted (monotonic across restarts)."""
        raw = self.get_meta("seq")
        return 0 if raw is None else int(raw) + 1

    def enqueue_telemetry(self, topic: str, seq: int, payload: bytes) -> DropReport | None:
        with self._tx():
            self.set_meta("seq", str(seq))
            self._insert("telemetry", topic, payload, False)
        return self._enforce_budget()

    def enqueue(self, kind: str, topic: str, payload: bytes, retain: bool = False) -> DropReport | None:
        with self._tx():
            self._insert(kind, topic, payload, retain)
        return self._enforce_budget()

    def _insert(self, kind: str, topic: str, payload: bytes, retain: bool) -> None:
        size = len(payload) + len(topic) + ROW_OVERHEAD_BYTES
        self._db.execute(
            "INSERT INTO outbox(kind, topic, payload, retain, size, created) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, topic, payload, int(retain), size, time.time()),
        )
        self.outbox_rows += 1
        self.outbox_bytes += size

    def _enforce_budget(self) -> DropReport | None:
        if self.outbox_bytes <= self.budget_bytes:
            return None
        # Drop the oldest telemetry first (events and acks are rare and small); 5 % head-room so this
        # does not run on every insert once the budget is reached.
        target = int(self.budget_bytes * 0.95)
        excess = self.outbox_bytes - target
        dropped_rows = 0
        dropped_bytes = 0
        with self._tx():
            for kinds in (("telemetry",), ("telemetry", "event", "ack")):
                if excess <= 0:
                    break
                marks = ",".join("?" * len(kinds))
                rows = self._db.execute(
                    f"SELECT id, size FROM outbox WHERE kind IN ({marks}) ORDER BY id",
                    kinds,
                ).fetchall()
                last_id = None
                for row_id, size in rows:
                    if excess <= 0:
                        break
                    excess -= size
                    dropped_rows += 1
                    dropped_bytes += size
                    last_id = row_id
                if last_id is not None:
                    self._db.execute(
                        f"DELETE FROM outbox WHERE kind IN ({marks}) AND id <= ?", (*kinds, last_id)
                    )
        self.outbox_rows -= dropped_rows
        self.outbox_bytes -= dropped_bytes
        self.dropped_rows_total += dropped_rows
        return DropReport(dropped_rows, dropped_bytes) if dropped_rows else None

    def peek(self, limit: int, after_id: int = 0) -> list[OutboxRow]:
        rows = self._db.execute(
            "SELECT id, kind, topic, payload, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), bool(r[4])) for r in rows]

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._tx():
            row = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE id IN ({marks})",
                ids,
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
        self.outbox_rows -= int(row[0])
        self.outbox_bytes -= int(row[1])

    # ---- commands ----
    def seen_command(self, command_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT ack FROM commands WHERE id = ?", (command_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def record_command(self, command_id: str, ack: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO commands(id, received, ack) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET ack = excluded.ack",
            (command_id, time.time(), json.dumps(ack)),
        )

    def prune_commands(self, older_than_s: float) -> None:
        self._db.execute("DELETE FROM commands WHERE received < ?", (time.time() - older_than_s,))

    # ---- helpers ----
    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
