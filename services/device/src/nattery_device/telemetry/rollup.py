"""The one-minute history rollup: what it stores, and keeping it whole when points arrive late.

Downsampled history over whole minutes is read from ``{measurement}_1m`` instead of the raw 5-second
points (a day of 5 fields: 1,440 rollup rows instead of 86,400 raw values for InfluxDB to decode and
average; ``device.history_query_p99_ms`` in bench/ingest.py). Per field it holds ``sum_*``, ``count_*``,
``min_*`` and ``max_*`` of the minute, so a mean over any whole number of minutes stays exact (sum of
sums / sum of counts).

Who writes it:

- live points: a continuous query per measurement (InfluxDB 1.x), re-run every minute over the last
  ``ROLLUP_FOR`` and grouped by every tag (``ensure_rollups`` in telemetry/service.py, at start-up);
- late points (a bridge replaying its outbox after a link outage): the ingest writer, right after it
  stores a batch, recomputes the minutes of every point older than ``LATE_S`` for that device
  (``late_ranges`` + ``repository.reroll``), because the continuous query no longer looks that far back.

The statements themselves (the continuous query, the re-roll, the reads) are in telemetry/repository.py.

Readers trust the rollup for minutes older than ``ROLLUP_LAG`` and read the raw points for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

# bench/ingest.py imports the re-roll statement from here (it predates the repository)

ROLLUP_FOR = "2m"
ROLLUP_LAG = timedelta(minutes=2)
# A point stored this long after its timestamp may have missed the continuous query's last run over its
# minute (which ends one to two minutes after the minute): the writer re-rolls its minute.
LATE_S = 45.0
_MINUTE_NS = 60_000_000_000


def late_ranges(lines: Iterable[str], before_ns: int) -> dict[tuple[str, str], tuple[int, int]]:
    """(measurement, device) -> [first minute, end of last minute) in ns, for lines older than
    ``before_ns``. Lines are the writer's line protocol: ``measurement,tags fields timestamp``."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for ln in lines:
        ts = int(ln[ln.rfind(" ") + 1 :])
        if ts >= before_ns:
            continue
        head = ln[: ln.find(" ")].split(",")
        device = next((t[7:] for t in head[1:] if t.startswith("device=")), None)
        if device is None:
            continue
        key = (head[0], device)
        lo, hi = out.get(key, (ts, ts))
        out[key] = (min(lo, ts), max(hi, ts))
    return {k: (lo - lo % _MINUTE_NS, hi - hi % _MINUTE_NS + _MINUTE_NS) for k, (lo, hi) in out.items()}
