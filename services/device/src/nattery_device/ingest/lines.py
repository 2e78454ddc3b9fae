"""Line protocol for telemetry, on the ingest hot path.

Equivalent to :func:`nattery_shared.influx.line` (tests check it) but cheaper per point: the
measurement and tag part is precomputed per device, and field names need no escaping because the
contract restricts them to ``[a-z][a-z0-9_]*``. Fields are always floats (a replay never changes a
field's type); the timestamp is the payload's ``ts`` in ns, so a replayed point overwrites itself.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from nattery_contracts.mqtt import Telemetry

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def ts_ns(ts: datetime) -> int:
    """Exact: ``int(ts.timestamp() * 1e6)`` can land one microsecond early through float rounding."""
    return (ts - _EPOCH) // _MICROSECOND * 1000


def telemetry_line(prefix: str, sample: Telemetry) -> str:
    fields = ",".join([f"{name}={float(value)!r}" for name, value in sample.values.items()])
    return f"{prefix}{fields} {ts_ns(sample.ts)}"


# What a values object may contain once quotes and whitespace are gone: names, "=", JSON numbers.
_RAW_FIELDS = re.compile(rb"[a-z][a-z0-9_]*=-?[0-9][0-9.eE+-]*(?:,[a-z][a-z0-9_]*=-?[0-9][0-9.eE+-]*)*")


def raw_fields(payload: bytes, sample: Telemetry) -> bytes | None:
    """The payload's own ``values`` text turned into line-protocol fields (``a=1.5,b=2``), or None.

    A validated payload's numbers are already valid line-protocol floats (no ``i`` suffix means float),
    so copying the text is exact and saves formatting 25 floats per message. Anything unusual (strings
    coerced to numbers, duplicate names, booleans) falls back to formatting the parsed values.
    """
    start = payload.find(b'"values"')
    opening = payload.find(b"{", start)
    closing = payload.find(b"}", opening)
    if start < 0 or opening < 0 or closing < 0:
        return None
    body = payload[opening + 1 : closing].translate(None, b' \t\r\n"').replace(b":", b"=")
    if body.count(b"=") != len(sample.values) or _RAW_FIELDS.fullmatch(body) is None:
        return None
    return body


def telemetry_line_fast(prefix: str, payload: bytes, sample: Telemetry) -> str:
    fields = raw_fields(payload, sample)
    if fields is None:
        return telemetry_line(prefix, sample)
    return f"{prefix}{fields.decode()} {ts_ns(sample.ts)}"
