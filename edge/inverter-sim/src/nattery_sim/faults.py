"""Fault injection state, shared by the CLI flags and the runtime control socket."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class FaultConfig:
    """What goes wrong on the wire. Counters (``*_next``) take precedence over probabilities."""

    no_reply_probability: float = 0.0  # drop a request silently
    no_reply_next: int = 0  # drop the next N requests
    corrupt_crc_probability: float = 0.0  # reply with a damaged CRC
    corrupt_crc_next: int = 0
    exception_probability: float = 0.0  # reply with exception ``exception_code`` instead
    exception_next: int = 0
    exception_code: int = 4  # 04 server device failure (06 busy is another realistic choice)
    chunked: bool = False  # deliver replies in ``chunk_size``-byte pieces ``chunk_gap_ms`` apart
    chunk_size: int = 16
    chunk_gap_ms: float = 16.0
    turnaround_ms: float = 30.0  # device turnaround added to the wire time
    # A device that is deaf for this long after its own reply (Deye + FTDI "pause after a reply"):
    # a request that starts arriving sooner is lost, as on a real line where it collides.
    deaf_after_reply_ms: float = 0.0
    # Reads touching any of these register addresses get no reply (a sensor block that stopped
    # answering): the master sees timeouts for exactly those polls.
    silent_registers: list[int] = field(default_factory=list)
    # The next N writes are acknowledged but not stored (a setting that "does not take"): a read-back
    # shows the old value.
    ignore_writes_next: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for k, v in changes.items():
            if k not in known or k == "seed":
                raise KeyError(f"unknown fault setting {k!r}")
            cur = getattr(self, k)
            if isinstance(cur, list):
                setattr(self, k, [int(x) for x in v])
            else:
                setattr(self, k, type(cur)(v) if cur is not None else v)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("seed", None)
        return d

    def _take(self, counter: str, probability: float) -> bool:
        n: int = getattr(self, counter)
        if n > 0:
            setattr(self, counter, n - 1)
            return True
        return probability > 0 and self._rng.random() < probability

    def take_no_reply(self) -> bool:
        return self._take("no_reply_next", self.no_reply_probability)

    def take_exception(self) -> bool:
        return self._take("exception_next", self.exception_probability)

    def take_corrupt(self) -> bool:
        return self._take("corrupt_crc_next", self.corrupt_crc_probability)

    def take_ignore_write(self) -> bool:
        return self._take("ignore_writes_next", 0.0)

    def silences(self, start: int, count: int) -> bool:
        """Whether a read of ``count`` registers from ``start`` touches a silenced register."""
        return any(start <= a < start + count for a in self.silent_registers)
