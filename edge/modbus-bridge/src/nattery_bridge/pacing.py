"""Learned pacing: the silence the master leaves after a reply before its next request, per device.

The Modbus spec needs only t3.5 between frames (3.65 ms at 9600 8N1, 1.75 ms above 19200 baud), and
that is where every device starts. Some devices (a Deye behind an FTDI adapter) are deaf for a while
after their own reply: a request sent into that pause is lost (a timeout) or garbled (a bad CRC, an
unexpected reply). Only such a failure, on a request that followed a good reply within
``ceiling_s`` (so the pause can have caused it), backs the pacing off: it doubles, up to ``ceiling_s``.
A request after a long idle gap or after a failed transaction says nothing about the pause (the device
may simply be off) and changes nothing.

After ``decay_after`` good transactions in a row the pacing creeps back down by ``decay`` (10 %), but
never below 1.25 x the longest gap that failed within ``memory_s``: a device that needs 20 ms settles
just above 20 ms instead of probing below it every few minutes. Memory fades after an hour, so a
cured line (new adapter, firmware) gets its bus time back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class AdaptivePacing:
    def __init__(
        self,
        floor_s: float,
        ceiling_s: float,
        clock: Callable[[], float],
        *,
        grow: float = 2.0,
        decay: float = 0.9,
        decay_after: int = 100,
        memory_s: float = 3600.0,
        margin: float = 1.25,
    ) -> None:
        self.floor_s = floor_s
        self.ceiling_s = max(ceiling_s, floor_s)
        self.clock = clock
        self.grow = grow
        self.decay = decay
        self.decay_after = decay_after
        self.memory_s = memory_s
        self.margin = margin
        self.pacing_s = floor_s
        self.backoffs = 0
        self._good_in_row = 0
        self._failed_gaps: deque[tuple[float, float]] = deque()  # (when, gap that failed)

    def learned_floor_s(self) -> float:
        horizon = self.clock() - self.memory_s
        while self._failed_gaps and self._failed_gaps[0][0] < horizon:
            self._failed_gaps.popleft()
        worst = max((g for _, g in self._failed_gaps), default=0.0)
        return min(self.ceiling_s, max(self.floor_s, worst * self.margin))

    def success(self) -> None:
        self._good_in_row += 1
        if self._good_in_row >= self.decay_after:
            self._good_in_row = 0
            self.pacing_s = max(self.learned_floor_s(), self.pacing_s * self.decay)

    def failure(self, gap_s: float | None) -> bool:
        """A reply timed out or collided; ``gap_s`` = silence between the last good reply and this
        request (None: no good reply yet). Returns whether the pacing backed off."""
        self._good_in_row = 0
        if gap_s is None or gap_s > self.ceiling_s:
            return False  # not sent into a pause after a reply: the pacing cannot be the cause
        self._failed_gaps.append((self.clock(), gap_s))
        new = min(self.ceiling_s, max(self.pacing_s * self.grow, self.learned_floor_s()))
        if new <= self.pacing_s:
            return False
        self.pacing_s = new
        self.backoffs += 1
        return True
