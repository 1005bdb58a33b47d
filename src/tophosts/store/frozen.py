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
import sys
from array import array
from collections.abc import Iterator
from typing import NamedTuple

from tophosts.store import Counts, TopHosts

STEP = 2048
"""Hosts read per step of a selection. A step costs at worst a sort of STEP + K pairs
(when every host read beats the ones kept so far): 0.5 ms, 2 to 5 at worst on a busy
machine here, for names of 20 characters."""


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

    __slots__ = ("_best", "_cut", "_items", "counts", "k")

    def __init__(self, counts: Counts, k: int) -> None:
        self.counts = counts
        self.k = k
        self._items: Iterator[tuple[str, int]] = iter(counts.items())
        self._best: TopHosts = []  # at most k, in /stats order
        self._cut: tuple[int, str] | None = None  # the k-th best so far, once there are k

    def step(self, budget: int = STEP) -> Frozen | None:
        """Read up to ``budget`` more hosts; the record once every host has been read."""
        chunk = list(itertools.islice(self._items, budget))
        cut = self._cut
        if cut is None:
            better = chunk
        else:
            count, host = cut
            # Only a host that beats the k-th best so far can be among the top k.
            better = [kv for kv in chunk if kv[1] > count or (kv[1] == count and kv[0] < host)]
        if better:
            best = self._best
            best.extend(better)
            best.sort(key=_rank)
            del best[self.k :]
            if len(best) == self.k:
                self._cut = (best[-1][1], best[-1][0])
        if len(chunk) < budget:
            return Frozen.of(self._best)
        return None


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
