"""Python's cyclic garbage collector held off while a large batch is in flight.

A batch of 262,000 small events is as many ``(timestamp, counts)`` tuples, which
the collector tracks (a tuple holding a dict is never untracked). Each full
collection while they live walks them all: 70-120 ms in one step of the event
loop, several times a batch. Nothing of a batch needs the collector (plain
counting frees it), so while any large batch is in flight automatic collection
is off, and it is back on once the last one has been let go of, when what is
left to walk is small.

Batches that overlap without end would keep it off: after ``LONGEST_HOLD``
seconds held, a release collects once anyway, so that cyclic garbage stays
bounded. The collector is the process's, so the hold is too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

LONGEST_HOLD = 10.0
"""Seconds the collector may stay off before a release collects anyway."""


class Hold:
    """Counts the holders; the first turns automatic collection off, the last back on
    (if it was on)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.holders = 0
        self._since = 0.0
        self._was_enabled = False

    def acquire(self) -> None:
        if self.holders == 0:
            self._was_enabled = gc.isenabled()
            self._since = self._clock()
            gc.disable()
        self.holders += 1

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            if self._was_enabled:
                gc.enable()
        elif self._was_enabled and self._clock() - self._since > LONGEST_HOLD:
            gc.collect()  # held by overlapping batches for too long: once in a while anyway
            self._since = self._clock()


HOLD = Hold()
"""The process's hold."""


class Share:
    """One request's share of a :class:`Hold`: taken at most once, given back once."""

    def __init__(self, hold: Hold = HOLD) -> None:
        self._hold = hold
        self.taken = False

    def take(self) -> None:
        if not self.taken:
            self._hold.acquire()
            self.taken = True

    def give_back(self) -> None:
        if self.taken:
            self.taken = False
            self._hold.release()
