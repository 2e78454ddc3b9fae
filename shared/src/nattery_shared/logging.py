"""JSON logs with a request id carried through HTTP requests and messages; readable lines in development.

The request id lives in a context variable: the HTTP middleware sets it from ``X-Request-ID`` (or makes
one), the RabbitMQ client copies it into each CloudEvent's ``requestid`` and back out when consuming.

Outside development every record is one JSON object (log shippers parse them). In development (``make
run``, where honcho already prefixes each line with the process name in its colour) a record is one
short line for a person: time, level (coloured when it matters), the module, the message. Per-request
client logs (httpx logs every InfluxDB write and every call to a provider at INFO) are silenced there.
``NATTERY_LOG_FORMAT=json|text`` overrides the choice; ``NO_COLOR`` turns the colours off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


# One line per request at INFO: the HTTP clients, and the services' own access log.
PER_REQUEST_LOGGERS = ("httpx", "httpcore", "uvicorn.access")
_LEVEL_COLOURS = {"WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


class ReadableFormatter(logging.Formatter):
    """``12:03:04 WARNING trading.planning.service: message`` (the level only when it is not INFO)."""

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self._colour = colour

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("nattery_")
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        if level and self._colour and record.levelname in _LEVEL_COLOURS:
            level = f"{_LEVEL_COLOURS[record.levelname]}{record.levelname}\033[0m "
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def readable_by_default(environment: str | None) -> bool:
    """Readable lines in development, JSON elsewhere, unless ``NATTERY_LOG_FORMAT`` says otherwise."""
    chosen = os.environ.get("NATTERY_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "text"
    return environment == "development"


def configure_logging(service: str, level: str = "INFO", *, environment: str | None = None) -> None:
    """Route every logger to one handler on stderr: JSON, or readable lines in development (see the
    module's docstring). Safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    readable = readable_by_default(environment)
    if readable:
        colour = "NO_COLOR" not in os.environ
        handler.setFormatter(ReadableFormatter(colour=colour))
    else:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if readable else logging.NOTSET)
    # uvicorn installs its own handlers; make them propagate to ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
