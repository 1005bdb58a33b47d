"""The embedded store: per-window aggregates in plain dicts.

Raw events are never kept, so memory follows the number of distinct (host,
live window) pairs, not the number of events.

* Each minute that can still be asked about (the past minute, the current one
  and any within the future skew) is a dict ``host -> count``.
* Each live hour is a dict too, holding *all* the hour's events, those of its
  live minutes included. An event is merged into its hour and, while its
  minute is live, into its minute; a minute that leaves is simply dropped.
* So every limit is decided by the hour alone: a host's count in a minute
  never exceeds its count in the minute's hour, and a minute's hosts are a
  subset of its hour's. ``len(hour)`` is the hour's exact number of distinct
  hosts, and the ``--max-tracked-hosts`` check costs O(hosts in the event) at
  every fill level.
* Each hour's total (all its events) is kept for a cheap overflow bound: only
  when it passes 2^53 - 1 are the hosts checked one by one.
* Zero counts are never stored: a host with count 0 is neither listed nor
  tracked.
* Idempotency keys: one dict ``digest -> packed record`` (a 15-byte bytes and an
  int below 2^60: about 130 bytes a key, dict slot included), and the digests
  used in each minute in a list, so that a minute's keys expire together, a
  slice at a time, with no timestamp per key. A key's record is written in the
  same synchronous step as its counts.
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
from tophosts.idempotency import (
    DIGEST_BYTES,
    KeyConflict,
    Keyed,
    KeyInFlight,
    KeysFull,
    kept_for,
    pack,
    unpack,
)
from tophosts.store import (
    Added,
    Clock,
    Counts,
    KeyDump,
    Sizes,
    TopHosts,
    WindowDump,
    by_window,
    merge,
)
from tophosts.windows import (
    HOUR,
    MINUTE,
    Window,
    aligned,
    floors,
    hour_of,
    minute_number,
    minute_of,
    past,
    settled_after,
)

# Dead windows are freed a slice at a time so that dropping a window of a
# million hosts never holds up the event loop for long.
_FREE_PER_CALL = 20_000

_ONE = Added(1, 0)
_EXPIRED = Added(0, 1)


class MemoryStore:
    kind = "memory"

    def __init__(
        self,
        clock: Clock = time.time,
        max_skew: int = 300,
        max_tracked_hosts: int = 1_000_000,
        idempotency_ttl: int | None = None,
        max_idempotency_keys: int = 1_000_000,
    ) -> None:
        self._clock = clock
        self._max_skew = max_skew
        self._max_tracked = max_tracked_hosts
        self._minutes: dict[int, Counts] = {}  # live minute start -> counts
        self._hours: dict[int, Counts] = {}  # live hour start -> counts of all its events
        self._totals: dict[int, int] = {}  # live hour start -> sum of all its counts
        # (size, start) -> (limit it was computed for, result)
        self._cache: dict[tuple[int, int], tuple[int, TopHosts]] = {}
        # Dead windows, and the digests of expired keys, still to be freed.
        self._graveyard: list[Counts | list[bytes]] = []
        self._rolled_at = -1
        self._minute_floor = 0
        self._hour_floor = 0
        # Idempotency keys (see the module docstring).
        self._ttl = settled_after(max_skew) if idempotency_ttl is None else idempotency_ttl
        self._kept_for = kept_for(self._ttl)
        self._max_keys = max_idempotency_keys
        self._keys: dict[bytes, int] = {}  # digest -> pack(fingerprint, expired)
        self._key_minutes: dict[int, list[bytes]] = {}  # minute start -> digests used in it
        self._dying = 0  # digests in the graveyard: expired, still in self._keys
        self._flight: set[bytes] = set()  # keys whose requests are being handled

    # -- the protocol ---------------------------------------------------------

    @property
    def sync(self) -> MemoryStore:
        return self

    @property
    def snapshots(self) -> MemoryStore:
        return self

    async def add(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        return self.add_now(events, key)

    def begin(self, digest: bytes) -> None:
        if digest in self._flight:
            raise KeyInFlight
        self._flight.add(digest)

    async def claim(self, digest: bytes) -> None:
        return None  # begin() marked it for the whole store: this process

    def end(self, digest: bytes) -> None:
        self._flight.discard(digest)

    async def top(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        return self.top_now(window, limit, now)

    async def sizes(self) -> Sizes:
        self._roll(self._clock())
        return Sizes(
            minute_hosts=sum(map(len, self._minutes.values())),
            hour_hosts=sum(map(len, self._hours.values())),
            windows=len(self._minutes) + len(self._hours),
            keys=len(self._keys) - self._dying,
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._minutes.clear()
        self._hours.clear()
        self._totals.clear()
        self._cache.clear()
        self._graveyard.clear()
        self._keys.clear()
        self._key_minutes.clear()
        self._dying = 0

    # -- snapshots ------------------------------------------------------------

    def dump(self) -> list[WindowDump]:
        """Copies of the live windows: minutes, then hours (each with all its events)."""
        self._roll(self._clock())
        out: list[WindowDump] = [(MINUTE, start, dict(c)) for start, c in self._minutes.items()]
        out.extend((HOUR, start, dict(c)) for start, c in sorted(self._hours.items()))
        return out

    def restore(self, windows: list[WindowDump]) -> int:
        """Add dumped windows to this store, dropping those no query can reach any more."""
        self._rolled_at = -1
        self._roll(self._clock())
        oldest = {MINUTE: self._minute_floor, HOUR: self._hour_floor}
        kept = 0
        for size, start, counts in windows:
            if size not in oldest or start < oldest[size] or not aligned(size, start):
                continue
            kept += 1
            nonzero = {host: n for host, n in counts.items() if n}
            if size == MINUTE:
                self._merge(self._minutes, start, nonzero)
            else:
                self._merge(self._hours, start, nonzero)
                self._totals[start] = self._totals.get(start, 0) + sum(nonzero.values())
            self._forget(size, start)
        return kept

    def dump_keys(self) -> list[KeyDump]:
        """The live keys, a minute at a time: digests end to end, and their records."""
        self._roll(self._clock())
        keys = self._keys
        return [
            (start, b"".join(used), [keys[digest] for digest in used])
            for start, used in self._key_minutes.items()
        ]

    def restore_keys(self, dumps: list[KeyDump]) -> int:
        """Add dumped keys, dropping the minutes whose keys expired; returns the keys kept.

        A key already known keeps its record. The cap is not applied: a live key is
        never dropped, and new keys are refused until there is room again.
        """
        now = self._clock()
        self._rolled_at = -1
        self._roll(now)
        keys = self._keys
        kept = 0
        for start, blob, records in dumps:
            if (
                start + MINUTE + self._kept_for <= now
                or not aligned(MINUTE, start)
                or len(blob) != len(records) * DIGEST_BYTES
            ):
                continue
            used = self._key_minutes.setdefault(start, [])
            for i, record in enumerate(records):
                digest = blob[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]
                if digest not in keys:
                    keys[digest] = record
                    used.append(digest)
                    kept += 1
        return kept

    # -- synchronous core -----------------------------------------------------
    #
    # add_now is the ingest hot path: one call per POST. It checks everything
    # first (future skew, then overflow, then the host cap) and only then
    # touches the windows, so a batch is applied whole or not at all.

    def add_now(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        now = self._clock()
        if self._graveyard or minute_number(now) != self._rolled_at:
            self._roll(now)
        if key is not None:
            return self._add_keyed(now, events, key)
        return self._add(now, events)

    def _add_keyed(
        self, now: float, events: Sequence[Event], key: Keyed, total: int | None = None
    ) -> Added:
        """:meth:`add_now` with a key, in the Redis store's order: the skew first, then
        the key, then the events; the outcome is recorded in this same step."""
        digest, fingerprint = key
        keys = self._keys
        record = keys.get(digest)
        if record is not None or len(keys) - self._dying >= self._max_keys:
            # The key refuses or replays this request, unless an event is too far ahead.
            horizon = now + self._max_skew
            for i, (ts, _) in enumerate(events):
                if ts > horizon:
                    raise too_far_ahead(ts, now, self._max_skew, i)
            if record is None:
                raise KeysFull(self._max_keys, self._ttl)
            kept, expired = unpack(record)
            if kept != fingerprint:
                raise KeyConflict
            return Added(len(events) - expired, expired, 0, True)
        # The skew is checked first in there. From add_one_now (``total`` given), the
        # answer's host_counts is left at 0, as there.
        if total is not None:
            ts, counts = events[0]
            added = self._add_one(now, ts, counts, total)
        else:
            added = self._add(now, events)
        keys[digest] = pack(fingerprint, added.expired)
        start = minute_of(int(now))
        used = self._key_minutes.get(start)
        if used is None:
            used = self._key_minutes[start] = []
        used.append(digest)
        return added

    def _add(self, now: float, events: Sequence[Event]) -> Added:
        if len(events) == 1:
            ts, counts = events[0]
            total = sum(counts.values())
            if self._add_one(now, ts, counts, total) is _EXPIRED:
                return _EXPIRED
            return Added(1, 0, total)
        if not events:
            return Added(0, 0)
        horizon = now + self._max_skew
        stamps = [ts for ts, _ in events]
        if max(stamps) > horizon:
            i = next(i for i, ts in enumerate(stamps) if ts > horizon)
            raise too_far_ahead(stamps[i], now, self._max_skew, i)

        # Group the live events by minute (a minute lies in one hour).
        by_minute: dict[int, list[Counts]] = {}
        expired = 0
        hour_floor, minute_floor = self._hour_floor, self._minute_floor
        for ts, counts in events:
            if ts < hour_floor:
                expired += 1
                continue
            group = by_minute.get(key := minute_of(ts))
            if group is None:
                by_minute[key] = [counts]
            else:
                group.append(counts)

        # Pre-aggregate each minute's events, so each host touches each window
        # dict once however many events of the batch mention it; then each hour.
        minute_adds = {start: _summed(group) for start, group in by_minute.items()}
        hour_adds: dict[int, Counts] = {}
        for start, counts in minute_adds.items():
            acc = hour_adds.get(hour := hour_of(start))
            if acc is None:
                hour_adds[hour] = dict(counts)
            else:
                merge(acc, counts)

        # The limits are the hours' (see the module docstring): check their
        # cheap bounds, and the batch exactly only when one is crossed.
        totals, hours, cap = self._totals, self._hours, self._max_tracked
        added = {hour: sum(counts.values()) for hour, counts in hour_adds.items()}
        if any(
            totals.get(hour, 0) + added[hour] > MAX_COUNT
            or len(hours.get(hour, ())) + len(counts) > cap
            for hour, counts in hour_adds.items()
        ):
            self._check_exactly(events)

        for start, counts in minute_adds.items():
            if start >= minute_floor and counts:
                self._merge(self._minutes, start, counts)
                self._forget(MINUTE, start)
        for hour, counts in hour_adds.items():
            if not counts:
                continue
            self._merge(hours, hour, counts)
            totals[hour] = totals.get(hour, 0) + added[hour]
            self._forget(HOUR, hour)
        return Added(len(events) - expired, expired, sum(added.values()))

    def add_one_now(
        self, ts: int, counts: Counts, total: int | None = None, key: Keyed | None = None
    ) -> Added:
        """``add_now([(ts, counts)], key)`` for ``POST /counter``, with no tuples on the
        way.

        ``total``, if given, is ``sum(counts.values())``, which the caller may
        have for its own counting; the answer's ``host_counts`` is left at 0 for
        that reason (no tuple to build on the hottest path).
        """
        now = self._clock()
        if self._graveyard or minute_number(now) != self._rolled_at:
            self._roll(now)
        if key is not None:
            return self._add_keyed(now, ((ts, counts),), key, total)
        return self._add_one(now, ts, counts, total)

    def _add_one(self, now: float, ts: int, counts: Counts, total: int | None = None) -> Added:
        """One event: the same checks, without the batch machinery.

        This is the hottest code of the service, so it is written out flat.
        """
        if ts > now + self._max_skew:
            raise too_far_ahead(ts, now, self._max_skew, 0)
        if ts < self._hour_floor:
            return _EXPIRED
        if 0 in counts.values():
            counts = {host: n for host, n in counts.items() if n}
            if not counts:
                return _ONE
        hour = hour_of(ts)
        if total is None:
            total = sum(counts.values())
        total += self._totals.get(hour, 0)
        target = self._hours.get(hour)
        if target is None:
            if len(counts) > self._max_tracked:
                self._check_exactly(((ts, counts),))
            target = self._hours[hour] = {}
        elif total > MAX_COUNT or len(target) + len(counts) > self._max_tracked:
            self._check_exactly(((ts, counts),))
        self._totals[hour] = total
        get = target.get
        cache = self._cache
        if ts >= self._minute_floor:
            # One pass over the hosts for the hour and the live minute.
            start = minute_of(ts)
            minute = self._minutes.get(start)
            if minute is None:
                minute = self._minutes[start] = {}
            get_minute = minute.get
            for host, n in counts.items():
                target[host] = get(host, 0) + n
                minute[host] = get_minute(host, 0) + n
            if cache:
                cache.pop((MINUTE, start), None)
        else:
            for host, n in counts.items():
                target[host] = get(host, 0) + n
        if cache:
            cache.pop((HOUR, hour), None)
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

    def _check_exactly(self, events: Sequence[Event]) -> None:
        """Raise for the first window, host and event of a batch past a limit.

        The slow path, when a cheap bound is crossed; it costs O(hosts in the
        batch). Overflow anywhere beats the host cap anywhere; each is looked
        for in the windows in the order the events first name them (an
        event's hour before its minute), which is what the Redis store does.
        Only hours are checked: a minute reaches no limit before its hour.
        """
        merged, _ = by_window(events, self._hour_floor, self._minute_floor)
        hours = [(start, acc) for (size, start), acc in merged.items() if size == HOUR]
        for start, acc in hours:
            known = self._hours.get(start, {})
            for host, n in acc.items():
                if known.get(host, 0) + n > MAX_COUNT:
                    raise total_too_large(host, _pushes_over(events, start, host, known))
        for start, _ in hours:
            self._check_cardinality(start, events)

    def _check_cardinality(self, start: int, events: Sequence[Event]) -> None:
        """Refuse the first event that would add a host past the cap to the hour ``start``."""
        known = self._hours.get(start, {})
        room = self._max_tracked - len(known)
        fresh: set[str] = set()
        for i, (ts, counts) in enumerate(events):
            if hour_of(ts) != start or ts < self._hour_floor:
                continue
            for host, n in counts.items():
                if n and host not in known and host not in fresh:
                    if len(fresh) >= room:
                        raise too_many_tracked(HOUR, host, self._max_tracked, i)
                    fresh.add(host)

    def top_now(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        """The top ``limit`` of the past ``window`` at ``now`` (default: the store's clock)."""
        if now is None:
            now = self._clock()
        self._roll(now)
        size = window.value
        start = past(now, window).start
        key = (size, start)
        cached = self._cache.get(key)
        if cached is not None and limit <= cached[0]:
            return cached[1][:limit]
        counts = (self._minutes if size == MINUTE else self._hours).get(start)
        result = _top(counts, limit) if counts else []
        self._cache[key] = (limit, result)
        return result

    def _roll(self, now: float) -> None:
        """Drop the windows no query can reach any more, and the expired keys; cheap
        unless the minute turned."""
        minute = minute_number(now)
        if minute != self._rolled_at:
            self._roll_over(now, minute)
        if self._graveyard:
            self._free_some()

    def _roll_over(self, now: float, minute: int) -> None:
        self._rolled_at = minute
        self._minute_floor, self._hour_floor = minute_floor, hour_floor = floors(now)
        for start in [s for s in self._hours if s < hour_floor]:
            self._graveyard.append(self._hours.pop(start))
            self._totals.pop(start, None)
            self._cache.pop((HOUR, start), None)
        for start in [s for s in self._minutes if s < minute_floor]:
            self._graveyard.append(self._minutes.pop(start))
            self._cache.pop((MINUTE, start), None)
        # A key used in the minute ``start`` is kept while the clock reads less than
        # start + MINUTE + kept_for (see tophosts.idempotency).
        kept_for = self._kept_for
        for start in [s for s in self._key_minutes if s + MINUTE + kept_for <= now]:
            dead = self._key_minutes.pop(start)
            self._dying += len(dead)
            self._graveyard.append(dead)

    def _free_some(self) -> None:
        budget = _FREE_PER_CALL
        graveyard = self._graveyard
        while graveyard and budget:
            dead = graveyard[-1]
            if isinstance(dead, list):  # digests of expired keys
                keys, take = self._keys, min(budget, len(dead))
                for _ in range(take):
                    keys.pop(dead.pop(), None)
                self._dying -= take
                budget -= take
                if not dead:
                    graveyard.pop()
                continue
            if len(dead) <= budget:
                budget -= len(dead)
                graveyard.pop()
                continue
            popitem = dead.popitem
            for _ in range(budget):
                popitem()
            budget = 0


def _pushes_over(events: Sequence[Event], start: int, host: str, known: Counts) -> int:
    """The index of the first event that takes ``host``'s total in the hour ``start`` past
    the cap."""
    running = known.get(host, 0)
    for i, (ts, counts) in enumerate(events):
        if hour_of(ts) == start:
            running += counts.get(host, 0)
            if running > MAX_COUNT:
                return i
    raise AssertionError("unreachable: the merged total passed the cap")  # pragma: no cover


def _top(counts: Counts, limit: int) -> TopHosts:
    """Top ``limit`` (host, count) pairs, count descending then host ascending."""
    if len(counts) <= limit:
        ranked = list(counts.items())
        ranked.sort(key=_rank)
        return ranked
    cutoff = heapq.nlargest(limit, counts.values())[-1]
    above = [kv for kv in counts.items() if kv[1] > cutoff]
    above.sort(key=_rank)
    # Ties at the cut-off are broken by host name: the smallest names win.
    tied = heapq.nsmallest(limit - len(above), [h for h, n in counts.items() if n == cutoff])
    above.extend((host, cutoff) for host in tied)
    return above


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _summed(group: list[Counts]) -> Counts:
    """The per-host sum of ``group`` without its zero counts; the one dict itself (not
    to be changed) if alone and without zeros."""
    first = group[0]
    if len(group) == 1 and 0 not in first.values():
        return first
    acc = dict(first)
    get = acc.get
    for counts in itertools.islice(group, 1, None):
        for host, n in counts.items():
            acc[host] = get(host, 0) + n
    if 0 in acc.values():
        return {host: n for host, n in acc.items() if n}
    return acc
