"""Logs: readable lines in development (no per-request client lines), JSON everywhere else."""

from __future__ import annotations

import io
import json
import logging

import pytest

from nattery_shared.logging import configure_logging


def _capture(monkeypatch: pytest.MonkeyPatch, environment: str) -> tuple[io.StringIO, list[str]]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.delenv("NATTERY_LOG_FORMAT", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("trading", "INFO", environment=environment)
    logging.getLogger("nattery_trading.planning.service").info("site %s planned", "sim-001")
    logging.getLogger("httpx").info("HTTP Request: POST http://127.0.0.1:8086/write 204")
    logging.getLogger("nattery_trading.planning.service").warning("no prices")
    root.handlers, level = saved[0], saved[1]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    return out, out.getvalue().splitlines()


def test_development_lines_are_for_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    _, lines = _capture(monkeypatch, "development")
    assert len(lines) == 2, lines  # the httpx request line is not there
    assert lines[0].endswith(" trading.planning.service: site sim-001 planned") and "{" not in lines[0]
    assert " WARNING trading.planning.service: no prices" in lines[1]


def test_json_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    _, lines = _capture(monkeypatch, "production")
    records = [json.loads(line) for line in lines]
    assert [r["logger"] for r in records] == [
        "nattery_trading.planning.service",
        "httpx",
        "nattery_trading.planning.service",
    ]
    assert records[0]["service"] == "trading" and records[0]["message"] == "site sim-001 planned"


def test_the_format_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTERY_LOG_FORMAT", "json")
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("device", "INFO", environment="development")
        logging.getLogger("x").info("hello")
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(logging.NOTSET)
    assert json.loads(out.getvalue())["message"] == "hello"
