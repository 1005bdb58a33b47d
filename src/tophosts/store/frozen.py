"""Frozen windows of the memory store: a compact record of a window's top K, and the
selection that finds it a slice at a time.

A window freezes when it stops being the past window; its counts never change
again, so its dict can be read across many turns of the event loop. The
selection reads :data:`STEP` hosts a turn and keeps only the best K seen so far
(count descending, then host ascending: the ``/stats`` order), so that
freezing a window of a million hosts never holds the loop up for long and
never sorts the whole window.
"""

from __future__ import annotations

import itertools
import operator
import sys
from array import array
from collections.abc import Iterator
from typing import NamedTuple

from tophosts.store import Counts, TopHosts

STEP = 2048
"""Hosts read per step of a selection. A step costs at worst two sorts of STEP + K pairs
(when every host read beats the ones kept so far): 0.4 ms here for names of 20
characters, 0.1 ms for counts in no particular order."""


class Frozen(NamedTuple):
    """A frozen window's top hosts: a tuple of names and an array of their counts, in
    ``/stats`` order. About 16 bytes per host beside the names, which are interned so
    that a host in many windows is held once."""

    hosts: tuple[str, ...]
    counts: array[int]

    @classmethod
    def of(cls, ranked: TopHosts) -> Frozen:
        return cls(
            tuple(sys.intern(host) for host, _ in ranked), array("q", (n for _, n in ranked))
        )

    def top(self, limit: int) -> TopHosts:
        return list(zip(self.hosts[:limit], self.counts[:limit], strict=True))


class Selection:
    """The top ``k`` of ``counts`` (which must not change any more), found a step at a time."""

    __slots__ = ("_best", "_counts", "_cut", "_hosts", "counts", "k")

    def __init__(self, counts: Counts, k: int) -> None:
        self.counts = counts
        self.k = k
        # Names and counts read side by side (a dict that does not change keeps its
        # order): lists of them hold no objects the garbage collector tracks, unlike
        # the (host, count) tuples of items(), so a step allocates little it must scan.
        self._hosts: Iterator[str] = iter(counts.keys())
        self._counts: Iterator[int] = iter(counts.values())
        self._best: TopHosts = []  # at most k, in /stats order
        self._cut: tuple[int, str] | None = None  # the k-th best so far, once there are k

    def step(self, budget: int = STEP) -> Frozen | None:
        """Read up to ``budget`` more hosts; the record once every host has been read."""
        hosts = list(itertools.islice(self._hosts, budget))
        counts = list(itertools.islice(self._counts, budget))
        cut = self._cut
        if cut is None:
            better = list(zip(hosts, counts, strict=True))
        else:
            low, host = cut
            # Only a host that beats the k-th best so far can be among the top k.
            better = [
                (h, n)
                for h, n in zip(hosts, counts, strict=True)
                if n > low or (n == low and h < host)
            ]
        if better:
            best = self._best
            best.extend(better)
            # Host ascending, then count descending: a stable sort keeps the hosts in
            # order among equal counts. No key tuple is built per host.
            best.sort(key=_HOST)
            best.sort(key=_COUNT, reverse=True)
            del best[self.k :]
            if len(best) == self.k:
                self._cut = (best[-1][1], best[-1][0])
        if len(hosts) < budget:
            return Frozen.of(self._best)
        return None


_HOST = operator.itemgetter(0)
_COUNT = operator.itemgetter(1)
