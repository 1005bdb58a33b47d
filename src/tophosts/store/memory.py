"""The embedded store: per-window aggregates in plain dicts.

Each live window is a dict ``host -> count``: one per minute that can still be
asked about (the past minute, the current one and any within the future skew)
and one per such hour. Raw events are never kept, so memory follows the number
of distinct (host, live window) pairs, not the number of events.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from tophosts.events import (
    MAX_COUNT,
    Event,
    too_far_ahead,
    too_many_tracked,
    total_too_large,
)
from tophosts.store import Added, Clock, Sizes, TopHosts
from tophosts.windows import HOUR, MINUTE, Window, past

Counts = dict[str, int]
WindowDump = tuple[int, int, Counts]
"""``(size, start, counts)``: one live window, as snapshots hold it."""

# Dead windows are freed a slice at a time so that dropping a window of a
# million hosts never holds up the event loop for long.
_FREE_PER_CALL = 20_000


class MemoryStore:
    kind = "memory"

    def __init__(
        self, clock: Clock = time.time, max_skew: int = 300, max_tracked_hosts: int = 1_000_000
    ) -> None:
        self._clock = clock
        self._max_skew = max_skew
        self._max_tracked = max_tracked_hosts
        # window size -> {window start -> counts}
        self._windows: dict[int, dict[int, Counts]] = {MINUTE: {}, HOUR: {}}
        self._totals: dict[tuple[int, int], int] = {}
        # (size, start) -> (limit it was computed for, result)
        self._cache: dict[tuple[int, int], tuple[int, TopHosts]] = {}
        self._graveyard: list[Counts] = []
        self._rolled_at = -1
        self._minute_floor = 0
        self._hour_floor = 0

    # -- the protocol ---------------------------------------------------------

    async def add(self, events: Sequence[Event]) -> Added:
        return self.add_now(events)

    async def top(self, window: Window, limit: int) -> TopHosts:
        return self.top_now(window, limit)

    async def sizes(self) -> Sizes:
        self._roll(self._clock())
        minutes, hours = self._windows[MINUTE], self._windows[HOUR]
        return Sizes(
            minute_hosts=sum(map(len, minutes.values())),
            hour_hosts=sum(map(len, hours.values())),
            windows=len(minutes) + len(hours),
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._windows = {MINUTE: {}, HOUR: {}}
        self._totals.clear()
        self._cache.clear()
        self._graveyard.clear()

    # -- snapshots ------------------------------------------------------------

    def dump(self) -> list[WindowDump]:
        """Copies of the live windows; the copies are cheap and safe to encode elsewhere."""
        self._roll(self._clock())
        return [
            (size, start, dict(counts))
            for size, windows in self._windows.items()
            for start, counts in windows.items()
        ]

    def restore(self, windows: list[WindowDump]) -> int:
        """Add dumped windows to this store, dropping those no query can reach any more."""
        self._rolled_at = -1
        self._roll(self._clock())
        kept = 0
        floors = {MINUTE: self._minute_floor, HOUR: self._hour_floor}
        for size, start, counts in windows:
            if size not in floors or start < floors[size] or start % size:
                continue
            self._apply([(size, start, counts)], [])
            kept += 1
        return kept

    # -- synchronous core -----------------------------------------------------

    def add_now(self, events: Sequence[Event]) -> Added:
        now = self._clock()
        self._roll(now)
        horizon = now + self._max_skew
        for i, (ts, _) in enumerate(events):
            if ts > horizon:
                raise too_far_ahead(ts, now, self._max_skew, i if len(events) > 1 else None)

        if len(events) == 1:
            ts, counts = events[0]
            if ts < self._hour_floor:
                return Added(0, 1)
            adds = [(HOUR, ts - ts % HOUR, counts)]
            if ts >= self._minute_floor:
                adds.append((MINUTE, ts - ts % MINUTE, counts))
            self._apply(adds, events)
            return Added(1, 0)

        # Pre-aggregate the batch per window, so each host touches each live
        # window's dict once however many events mention it.
        merged: dict[tuple[int, int], Counts] = {}
        expired = 0
        hour_floor, minute_floor = self._hour_floor, self._minute_floor
        for ts, counts in events:
            if ts < hour_floor:
                expired += 1
                continue
            keys = [(HOUR, ts - ts % HOUR)]
            if ts >= minute_floor:
                keys.append((MINUTE, ts - ts % MINUTE))
            for key in keys:
                acc = merged.get(key)
                if acc is None:
                    merged[key] = dict(counts)
                else:
                    get = acc.get
                    for host, n in counts.items():
                        acc[host] = get(host, 0) + n
        self._apply([(size, start, acc) for (size, start), acc in merged.items()], events)
        return Added(len(events) - expired, expired)

    def _apply(self, adds: list[tuple[int, int, Counts]], events: Sequence[Event]) -> None:
        totals = self._totals
        sums = [sum(counts.values()) for _, _, counts in adds]
        # A host total can only pass MAX_COUNT if its window total does: check
        # the cheap bound first, and every host only when it is crossed.
        for (size, start, counts), added in zip(adds, sums, strict=True):
            if totals.get((size, start), 0) + added > MAX_COUNT:
                self._check_overflow(size, start, counts, events)
            tracked = self._windows[size].get(start, {})
            if len(tracked) + len(counts) > self._max_tracked:
                self._check_cardinality(size, start, tracked, events)
        for (size, start, counts), added in zip(adds, sums, strict=True):
            key = (size, start)
            target = self._windows[size].get(start)
            if target is None:
                self._windows[size][start] = dict(counts)
            else:
                get = target.get
                for host, n in counts.items():
                    target[host] = get(host, 0) + n
            totals[key] = totals.get(key, 0) + added
            self._cache.pop(key, None)

    def _check_overflow(
        self, size: int, start: int, counts: Counts, events: Sequence[Event]
    ) -> None:
        target = self._windows[size].get(start, {})
        for host, n in counts.items():
            if target.get(host, 0) + n > MAX_COUNT:
                # Name the first event that pushes this host over.
                running = target.get(host, 0)
                for i, (ts, event) in enumerate(events):
                    if ts - ts % size == start:
                        running += event.get(host, 0)
                        if running > MAX_COUNT:
                            raise total_too_large(host, i if len(events) > 1 else None)
                raise total_too_large(host, None)  # pragma: no cover - unreachable

    def _check_cardinality(
        self, size: int, start: int, target: Counts, events: Sequence[Event]
    ) -> None:
        tracked = set(target)
        for i, (ts, counts) in enumerate(events):
            if ts - ts % size != start or ts < self._hour_floor:
                continue
            if size == MINUTE and ts < self._minute_floor:
                continue
            for host in counts:
                if host not in tracked:
                    if len(tracked) >= self._max_tracked:
                        raise too_many_tracked(
                            size, host, self._max_tracked, i if len(events) > 1 else None
                        )
                    tracked.add(host)

    def top_now(self, window: Window, limit: int) -> TopHosts:
        now = self._clock()
        self._roll(now)
        size = window.value
        start = past(now, window).start
        key = (size, start)
        cached = self._cache.get(key)
        if cached is not None and limit <= cached[0]:
            return cached[1][:limit]
        counts = self._windows[size].get(start)
        result = _top(counts, limit) if counts else []
        self._cache[key] = (limit, result)
        return result

    def _roll(self, now: float) -> None:
        """Drop windows no query can reach any more; cheap unless the minute turned."""
        minute = int(now // MINUTE)
        if self._graveyard:
            self._free_some()
        if minute == self._rolled_at:
            return
        self._rolled_at = minute
        self._minute_floor = past(now, Window.MINUTE).start
        self._hour_floor = past(now, Window.HOUR).start
        for size, floor in ((MINUTE, self._minute_floor), (HOUR, self._hour_floor)):
            windows = self._windows[size]
            for start in [s for s in windows if s < floor]:
                self._graveyard.append(windows.pop(start))
                self._totals.pop((size, start), None)
                self._cache.pop((size, start), None)

    def _free_some(self) -> None:
        budget = _FREE_PER_CALL
        graveyard = self._graveyard
        while graveyard and budget:
            dead = graveyard[-1]
            if len(dead) <= budget:
                budget -= len(dead)
                graveyard.pop()
                continue
            popitem = dead.popitem
            for _ in range(budget):
                popitem()
            budget = 0


def _top(counts: Counts, limit: int) -> TopHosts:
    """Top ``limit`` (host, count) pairs, count descending then host ascending; no zeros."""
    if len(counts) <= limit:
        ranked = [kv for kv in counts.items() if kv[1] > 0]
        ranked.sort(key=_rank)
        return ranked
    cutoff = heapq.nlargest(limit, counts.values())[-1]
    if cutoff == 0:
        ranked = [kv for kv in counts.items() if kv[1] > 0]
        ranked.sort(key=_rank)
        return ranked
    above = [kv for kv in counts.items() if kv[1] > cutoff]
    above.sort(key=_rank)
    # Ties at the cut-off are broken by host name: the smallest names win.
    tied = heapq.nsmallest(limit - len(above), [h for h, n in counts.items() if n == cutoff])
    above.extend((host, cutoff) for host in tied)
    return above


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
