"""The embedded store: per-window aggregates in plain dicts.

Each live window is a dict ``host -> count``: one per minute that can still be
asked about (the past minute, the current one and any within the future skew)
and one per such hour. Raw events are never kept, so memory follows the number
of distinct (host, live window) pairs, not the number of events.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence

from tophosts.events import MAX_COUNT, Event, too_far_ahead, total_too_large
from tophosts.store import Added, Clock, Sizes, TopHosts
from tophosts.windows import HOUR, MINUTE, Window, past

Counts = dict[str, int]

# Dead windows are freed a slice at a time so that dropping a window of a
# million hosts never holds up the event loop for long.
_FREE_PER_CALL = 20_000


_ONE = Added(1, 0)
_EXPIRED = Added(0, 1)


class MemoryStore:
    kind = "memory"

    def __init__(self, clock: Clock = time.time, max_skew: int = 300) -> None:
        self._clock = clock
        self._max_skew = max_skew
        # window size -> {window start -> counts}, and the same for each window's total.
        self._minutes: dict[int, Counts] = {}
        self._hours: dict[int, Counts] = {}
        self._windows = {MINUTE: self._minutes, HOUR: self._hours}
        self._minute_totals: dict[int, int] = {}
        self._hour_totals: dict[int, int] = {}
        self._totals = {MINUTE: self._minute_totals, HOUR: self._hour_totals}
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
        minutes, hours = self._minutes, self._hours
        return Sizes(
            minute_hosts=sum(map(len, minutes.values())),
            hour_hosts=sum(map(len, hours.values())),
            windows=len(minutes) + len(hours),
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for windows in self._windows.values():
            windows.clear()
        for totals in self._totals.values():
            totals.clear()
        self._cache.clear()
        self._graveyard.clear()

    # -- synchronous core -----------------------------------------------------
    #
    # add_now is the ingest hot path: one call per POST. It checks everything
    # first (future skew, then overflow) and only then touches the windows, so
    # a batch is applied whole or not at all.

    def add_now(self, events: Sequence[Event]) -> Added:
        now = self._clock()
        if self._graveyard or int(now // MINUTE) != self._rolled_at:
            self._roll(now)
        if len(events) == 1:
            ts, counts = events[0]
            return self._add_one(now, ts, counts)
        if not events:
            return Added(0, 0)
        horizon = now + self._max_skew
        stamps = [ts for ts, _ in events]
        if max(stamps) > horizon:
            i = next(i for i, ts in enumerate(stamps) if ts > horizon)
            raise too_far_ahead(stamps[i], now, self._max_skew, i)

        # Group the batch: events of a live minute by that minute (they count in
        # the minute and its hour), older live events by their hour.
        by_minute: dict[int, list[Counts]] = {}
        by_hour: dict[int, list[Counts]] = {}
        expired = 0
        hour_floor, minute_floor = self._hour_floor, self._minute_floor
        for ts, counts in events:
            if ts >= minute_floor:
                group = by_minute.get(key := ts - ts % MINUTE)
                if group is None:
                    by_minute[key] = [counts]
                else:
                    group.append(counts)
            elif ts >= hour_floor:
                group = by_hour.get(key := ts - ts % HOUR)
                if group is None:
                    by_hour[key] = [counts]
                else:
                    group.append(counts)
            else:
                expired += 1

        # Pre-aggregate each minute's events, so each host touches the minute
        # and hour dicts once however many events of the batch mention it.
        minute_adds = {start: _summed(group) for start, group in by_minute.items()}
        hour_parts = by_hour  # older events go to their hour as they are
        for start, counts in minute_adds.items():
            hour_parts.setdefault(start - start % HOUR, []).append(counts)
        minute_sums = {start: sum(c.values()) for start, c in minute_adds.items()}
        hour_sums = {start: sum(map(sum, map(dict.values, p))) for start, p in hour_parts.items()}

        # A host total can only pass MAX_COUNT if its window total does: check
        # the cheap bound first, and every host only when it is crossed.
        for start, added in hour_sums.items():
            if self._hour_totals.get(start, 0) + added > MAX_COUNT:
                self._check_overflow(HOUR, start, _summed(hour_parts[start]), events)
        for start, added in minute_sums.items():
            if self._minute_totals.get(start, 0) + added > MAX_COUNT:
                self._check_overflow(MINUTE, start, minute_adds[start], events)

        for start, counts in minute_adds.items():
            self._merge(MINUTE, start, counts, minute_sums[start])
        for start, parts in hour_parts.items():
            for counts in parts:
                self._merge(HOUR, start, counts, 0)
            self._hour_totals[start] = self._hour_totals.get(start, 0) + hour_sums[start]
        return Added(len(events) - expired, expired)

    def _add_one(self, now: float, ts: int, counts: Counts) -> Added:
        """One event (``POST /counter``): the same checks, without the batch machinery.

        This is the hottest code of the service, so it is written out flat.
        """
        if ts > now + self._max_skew:
            raise too_far_ahead(ts, now, self._max_skew, None)
        if ts < self._hour_floor:
            return _EXPIRED
        added = sum(counts.values())
        hour = ts - ts % HOUR
        hour_total = self._hour_totals.get(hour, 0) + added
        if hour_total > MAX_COUNT:
            self._check_overflow(HOUR, hour, counts, ((ts, counts),))
        if ts >= self._minute_floor:
            minute = ts - ts % MINUTE
            minute_total = self._minute_totals.get(minute, 0) + added
            if minute_total > MAX_COUNT:
                self._check_overflow(MINUTE, minute, counts, ((ts, counts),))
            target = self._minutes.get(minute)
            if target is None:
                self._minutes[minute] = dict(counts)
            else:
                get = target.get
                for host, n in counts.items():
                    target[host] = get(host, 0) + n
            self._minute_totals[minute] = minute_total
            if self._cache:
                self._cache.pop((MINUTE, minute), None)
        target = self._hours.get(hour)
        if target is None:
            self._hours[hour] = dict(counts)
        else:
            get = target.get
            for host, n in counts.items():
                target[host] = get(host, 0) + n
        self._hour_totals[hour] = hour_total
        if self._cache:
            self._cache.pop((HOUR, hour), None)
        return _ONE

    def _merge(self, size: int, start: int, counts: Counts, added: int) -> None:
        """Add ``counts`` (already checked) to a window, and ``added`` to its total."""
        target = self._windows[size].get(start)
        if target is None:
            # A copy: the caller's dict may be merged into another window too.
            self._windows[size][start] = dict(counts)
        else:
            get = target.get
            for host, n in counts.items():
                target[host] = get(host, 0) + n
        if added:
            totals = self._totals[size]
            totals[start] = totals.get(start, 0) + added
        if self._cache:
            self._cache.pop((size, start), None)

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
                self._totals[size].pop(start, None)
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


def _summed(group: list[Counts]) -> Counts:
    """The per-host sum of ``group``; the one dict itself (not to be changed) if alone."""
    if len(group) == 1:
        return group[0]
    acc = dict(group[0])
    get = acc.get
    for counts in itertools.islice(group, 1, None):
        for host, n in counts.items():
            acc[host] = get(host, 0) + n
    return acc
