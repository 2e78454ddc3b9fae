"""What every benchmark script shares: one way to print a figure, one percentile.

A benchmark prints one JSON object per line on stdout, and nothing else there (progress goes to stderr):

    {"name": "device.ingest_msgs_per_s", "value": 8123, "unit": "msg/s", "target": ">= 10000",
     "reference": "ThingsBoard single server ...", ...extra fields}

``reference`` says what the figure is compared with (a published figure, a physical limit, a ceiling
measured on this machine); ``target`` is the bar it must clear, when there is one.

Scripts in bench/ import this as ``from common import emit, percentile`` (the script's folder is first on
``sys.path`` when run as ``python bench/x.py``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["emit", "note", "percentile"]


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: a non-finite float becomes the string "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def emit(
    name: str,
    value: float | int | None,
    unit: str,
    *,
    reference: str,
    target: str | None = None,
    **extra: Any,
) -> None:
    """Print one figure as one JSON line: name, value, unit, target, reference, then ``extra``.

    ``value`` is None when the figure could not be measured (say why in an extra field); an infinite
    value (a probe that never landed) is printed as the string "inf".
    """
    record = {"name": name, "value": value, "unit": unit, "target": target, "reference": reference}
    clash = record.keys() & extra.keys()
    if clash:
        raise ValueError(f"extra fields shadow the standard ones: {sorted(clash)}")
    record.update(extra)
    print(json.dumps(_finite(record), allow_nan=False), flush=True)


def note(bench: str, message: str) -> None:
    """Progress for a human, on stderr (stdout carries only the JSON lines)."""
    print(f"[{bench}] {message}", file=sys.stderr, flush=True)


def percentile(values: Iterable[float], pct: float, *, missing: int = 0) -> float:
    """Nearest-rank percentile: the smallest value with at least ``pct`` % of the values at or below it.

    ``missing`` samples that never completed (a probe that never landed, a request that never
    answered) count as infinite, so enough of them make the percentile infinite rather than vanish.
    Raises ValueError on no samples at all or ``pct`` outside (0, 100].
    """
    if not 0 < pct <= 100:
        raise ValueError(f"pct must be in (0, 100], got {pct}")
    ordered = sorted(values) + [math.inf] * missing
    if not ordered:
        raise ValueError("percentile of no samples")
    rank = math.ceil(pct / 100 * len(ordered))  # 1-based
    return ordered[max(1, rank) - 1]
