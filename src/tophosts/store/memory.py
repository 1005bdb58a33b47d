"""The embedded store: per-window aggregates in plain dicts.

Raw events are never kept, so memory follows the number of distinct (host,
live window) pairs, not the number of events.

* Each minute that can still be asked about (the past minute, the current one
  and any within the future skew) is a dict ``host -> count``.
* Each live hour is a dict too, holding the hour's events *except* those of its
  still-live minutes: when a minute leaves, its dict is folded into its hour.
  So an event costs one dict merge, not two, and an hour's counts are its dict
  plus those of its live minutes (at most the past minute, for a query).
* Each hour's total (all its events) is kept for a cheap overflow bound, and
  an upper bound of its distinct hosts for a cheap ``--max-tracked-hosts`` one.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence

from tophosts.events import (
    MAX_COUNT,
    Event,
    too_far_ahead,
    too_many_tracked,
    total_too_large,
)
from tophosts.store import Added, Clock, Counts, Sizes, TopHosts, by_window, merge
from tophosts.windows import HOUR, MINUTE, Window, past

WindowDump = tuple[int, int, Counts]
"""``(size, start, counts)``: one live window, as snapshots hold it."""

# Dead windows are freed a slice at a time so that dropping a window of a
# million hosts never holds up the event loop for long.
_FREE_PER_CALL = 20_000

_ONE = Added(1, 0)
_EXPIRED = Added(0, 1)


class MemoryStore:
    kind = "memory"

    def __init__(
        self, clock: Clock = time.time, max_skew: int = 300, max_tracked_hosts: int = 1_000_000
    ) -> None:
        self._clock = clock
        self._max_skew = max_skew
        self._max_tracked = max_tracked_hosts
        self._minutes: dict[int, Counts] = {}  # live minute start -> counts
        self._hours: dict[int, Counts] = {}  # live hour start -> counts of its left minutes
        self._hour_totals: dict[int, int] = {}  # live hour start -> total of all its events
        # live hour start -> len(its dict) + len(each of its live minutes): at
        # least its distinct hosts, so under the cap it needs no exact count.
        self._hour_entries: dict[int, int] = {}
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
        # Hosts of a live minute count in its hour too, once.
        hour_hosts = sum(map(len, hours.values()))
        live_hours = set(hours)
        for start, counts in minutes.items():
            hour = hours.get(start - start % HOUR, {})
            hour_hosts += sum(1 for host in counts if host not in hour)
            live_hours.add(start - start % HOUR)
        return Sizes(
            minute_hosts=sum(map(len, minutes.values())),
            hour_hosts=hour_hosts,
            windows=len(minutes) + len(live_hours),
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._minutes.clear()
        self._hours.clear()
        self._hour_totals.clear()
        self._hour_entries.clear()
        self._cache.clear()
        self._graveyard.clear()

    # -- snapshots ------------------------------------------------------------

    def dump(self) -> list[WindowDump]:
        """Copies of the live windows (an hour with its live minutes counted in)."""
        self._roll(self._clock())
        out: list[WindowDump] = [(MINUTE, start, dict(c)) for start, c in self._minutes.items()]
        hours = set(self._hours) | {m - m % HOUR for m in self._minutes}
        out.extend((HOUR, start, self._hour_counts(start)) for start in sorted(hours))
        return out

    def restore(self, windows: list[WindowDump]) -> int:
        """Add dumped windows to this store, dropping those no query can reach any more."""
        self._rolled_at = -1
        self._roll(self._clock())
        floors = {MINUTE: self._minute_floor, HOUR: self._hour_floor}
        kept = [
            (size, start, counts)
            for size, start, counts in windows
            if size in floors and start >= floors[size] and not start % size
        ]
        # A dumped hour counts its live minutes in; those come back as minutes,
        # so the hour's own dict gets the rest.
        minutes = [(start, counts) for size, start, counts in kept if size == MINUTE]
        for size, start, counts in kept:
            self._forget(size, start)
            if size == MINUTE:
                self._merge(self._minutes, start, counts)
                self._hour_entries[start - start % HOUR] = self._hour_entries.get(
                    start - start % HOUR, 0
                ) + len(counts)
                continue
            rest = dict(counts)
            for minute, part in minutes:
                if minute - minute % HOUR == start:
                    for host, n in part.items():
                        rest[host] -= n
            rest = {host: n for host, n in rest.items() if n or counts[host] == 0}
            self._merge(self._hours, start, rest)
            self._hour_totals[start] = self._hour_totals.get(start, 0) + sum(counts.values())
            self._hour_entries[start] = self._hour_entries.get(start, 0) + len(rest)
        return len(kept)

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
            if self._add_one(now, ts, counts) is _EXPIRED:
                return _EXPIRED
            return Added(1, 0, sum(counts.values()))
        if not events:
            return Added(0, 0)
        horizon = now + self._max_skew
        stamps = [ts for ts, _ in events]
        if max(stamps) > horizon:
            i = next(i for i, ts in enumerate(stamps) if ts > horizon)
            raise too_far_ahead(stamps[i], now, self._max_skew, i)

        # Group the batch: events of a live minute by that minute, older live
        # events by their hour.
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

        # Pre-aggregate each minute's events, so each host touches its minute
        # dict once however many events of the batch mention it.
        minute_adds = {start: _summed(group) for start, group in by_minute.items()}
        added: dict[int, int] = {}  # hour start -> what the batch adds to its total
        for start, group in by_hour.items():
            added[start] = sum(map(sum, map(dict.values, group)))
        for start, counts in minute_adds.items():
            hour = start - start % HOUR
            added[hour] = added.get(hour, 0) + sum(counts.values())

        # A host total can only pass MAX_COUNT if its hour's total does, and a
        # window can only pass the host cap if its hour's bound does (an hour
        # holds every event and host of its minutes): check those bounds, and
        # every window exactly only when one is crossed.
        totals = self._hour_totals
        entries = self._hour_entries
        gains: dict[int, int] = {}  # hour start -> upper bound of the hosts it gains
        for start, group in by_hour.items():
            gains[start] = sum(map(len, group))
        for start, counts in minute_adds.items():
            hour = start - start % HOUR
            gains[hour] = gains.get(hour, 0) + len(counts)
        if any(entries.get(h, 0) + more > self._max_tracked for h, more in gains.items()) or any(
            totals.get(h, 0) + more > MAX_COUNT for h, more in added.items()
        ):
            self._check_exactly(events)

        for start, counts in minute_adds.items():
            hour = start - start % HOUR
            had = len(self._minutes.get(start, ()))
            self._merge(self._minutes, start, counts)
            entries[hour] = entries.get(hour, 0) + len(self._minutes[start]) - had
            self._forget(MINUTE, start)
            self._forget(HOUR, hour)
        for start, group in by_hour.items():
            had = len(self._hours.get(start, ()))
            for counts in group:
                self._merge(self._hours, start, counts)
            entries[start] = entries.get(start, 0) + len(self._hours[start]) - had
            self._forget(HOUR, start)
        for hour, more in added.items():
            totals[hour] = totals.get(hour, 0) + more
        return Added(len(events) - expired, expired, sum(added.values()))

    def add_one_now(self, ts: int, counts: Counts, total: int | None = None) -> Added:
        """``add_now([(ts, counts)])`` for ``POST /counter``, with no tuples on the way.

        ``total``, if given, is ``sum(counts.values())``, which the caller may
        have for its own counting; the answer's ``host_counts`` is left at 0 for
        that reason (no tuple to build on the hottest path).
        """
        now = self._clock()
        if self._graveyard or int(now // MINUTE) != self._rolled_at:
            self._roll(now)
        return self._add_one(now, ts, counts, total)

    def _add_one(self, now: float, ts: int, counts: Counts, added: int | None = None) -> Added:
        """One event: the same checks, without the batch machinery.

        This is the hottest code of the service, so it is written out flat.
        """
        if ts > now + self._max_skew:
            raise too_far_ahead(ts, now, self._max_skew, None)
        if ts < self._hour_floor:
            return _EXPIRED
        hour = ts - ts % HOUR
        if added is None:
            added = sum(counts.values())
        total = self._hour_totals.get(hour, 0) + added
        entries = self._hour_entries.get(hour, 0)
        if total > MAX_COUNT or entries + len(counts) > self._max_tracked:
            self._check_exactly(((ts, counts),))
        # A live minute takes the event (it folds into its hour when it leaves);
        # an event for a minute no query can reach goes straight to its hour.
        if ts >= self._minute_floor:
            start = ts - ts % MINUTE
            windows = self._minutes
            if self._cache:
                self._cache.pop((MINUTE, start), None)
        else:
            start, windows = hour, self._hours
        target = windows.get(start)
        if target is None:
            windows[start] = dict(counts)
            entries += len(counts)
        else:
            had = len(target)
            get = target.get
            for host, n in counts.items():
                target[host] = get(host, 0) + n
            entries += len(target) - had
        self._hour_totals[hour] = total
        self._hour_entries[hour] = entries
        if self._cache:
            self._cache.pop((HOUR, hour), None)
        return _ONE

    @staticmethod
    def _merge(windows: dict[int, Counts], start: int, counts: Counts) -> None:
        """Add ``counts`` (already checked) to the window ``start`` of ``windows``."""
        target = windows.get(start)
        if target is None:
            # A copy: the caller's dict may be merged elsewhere too.
            windows[start] = dict(counts)
        else:
            merge(target, counts)

    def _forget(self, size: int, start: int) -> None:
        if self._cache:
            self._cache.pop((size, start), None)

    def _count(self, size: int, start: int, host: str) -> int:
        """What ``host`` has in a window now (an hour: its dict plus its live minutes)."""
        if size == MINUTE:
            return self._minutes.get(start, {}).get(host, 0)
        n = self._hours.get(start, {}).get(host, 0)
        for minute, counts in self._minutes.items():
            if minute - minute % HOUR == start:
                n += counts.get(host, 0)
        return n

    def _hour_counts(self, start: int) -> Counts:
        """The counts of the hour ``start``: its dict plus its live minutes, as a new dict."""
        counts = dict(self._hours.get(start, {}))
        get = counts.get
        for minute, part in self._minutes.items():
            if minute - minute % HOUR == start:
                for host, n in part.items():
                    counts[host] = get(host, 0) + n
        return counts

    def _check_exactly(self, events: Sequence[Event]) -> None:
        """Raise for the first window, host and event of a batch past a limit.

        The slow path, when a cheap bound is crossed. Windows are checked in
        the order the events first name them (an event's hour, then its
        minute), each for overflow and then for the host cap, so that the
        error names what the Redis store names.
        """
        merged, _ = by_window(events, self._hour_floor, self._minute_floor)
        for (size, start), acc in merged.items():
            self._check_overflow(size, start, acc, events)
            self._check_cardinality(size, start, events)

    def _check_cardinality(self, size: int, start: int, events: Sequence[Event]) -> None:
        """Refuse the first event that would add a host past the cap to a window."""
        if size == MINUTE:
            tracked = set(self._minutes.get(start, ()))
        else:
            tracked = set(self._hours.get(start, ()))
            for minute, part in self._minutes.items():
                if minute - minute % HOUR == start:
                    tracked.update(part)
        if len(tracked) + sum(len(c) for _, c in events) <= self._max_tracked:
            return
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

    def _check_overflow(
        self, size: int, start: int, counts: Counts, events: Sequence[Event]
    ) -> None:
        for host, n in counts.items():
            if self._count(size, start, host) + n > MAX_COUNT:
                # Name the first event that pushes this host over.
                running = self._count(size, start, host)
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
        if size == MINUTE:
            counts = self._minutes.get(start)
        else:
            counts = self._hours.get(start)
            # In the first minute of an hour, the past minute still belongs to
            # the past hour: count it on a copy (the cache keeps the answer).
            if any(m - m % HOUR == start for m in self._minutes):
                counts = self._hour_counts(start)
        result = _top(counts, limit) if counts else []
        self._cache[key] = (limit, result)
        return result

    def _roll(self, now: float) -> None:
        """Fold minutes that left into their hour, drop dead windows; cheap unless the
        minute turned."""
        minute = int(now // MINUTE)
        if self._graveyard:
            self._free_some()
        if minute == self._rolled_at:
            return
        self._rolled_at = minute
        self._minute_floor = minute_floor = past(now, Window.MINUTE).start
        self._hour_floor = hour_floor = past(now, Window.HOUR).start
        for start in [s for s in {*self._hours, *self._hour_totals} if s < hour_floor]:
            if start in self._hours:
                self._graveyard.append(self._hours.pop(start))
            self._hour_totals.pop(start, None)
            self._hour_entries.pop(start, None)
            self._cache.pop((HOUR, start), None)
        for start in [s for s in self._minutes if s < minute_floor]:
            counts = self._minutes.pop(start)
            self._cache.pop((MINUTE, start), None)
            hour = start - start % HOUR
            if hour < hour_floor:
                self._graveyard.append(counts)
                continue
            # The hour's answer does not change: its cache stays valid.
            target = self._hours.get(hour)
            if target is None:
                self._hours[hour] = counts
                continue
            merged = len(target) + len(counts)
            if len(target) < len(counts):  # merge the smaller into the larger
                self._hours[hour], target, counts = counts, counts, target
            get = target.get
            for host, n in counts.items():
                target[host] = get(host, 0) + n
            # The bound tightens: hosts in both are now counted once.
            self._hour_entries[hour] = self._hour_entries.get(hour, merged) - (merged - len(target))

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
