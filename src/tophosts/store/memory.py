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
* History (``retention`` > 0): a window that stops being the past one (it
  freezes) is not dropped but kept, unchanged, until its top K is selected a
  slice at a time (:mod:`tophosts.store.frozen`); it answers from its dict
  until then. Then only the compact record is kept, for ``retention`` seconds,
  and the dict is freed a slice at a time like any dead window.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Sequence

from tophosts.events import (
    MAX_COUNT,
    Event,
    spans,
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
    AT_ONCE_HOSTS,
    SLICE_HOSTS,
    Added,
    Clock,
    Counts,
    FrozenDump,
    KeyDump,
    Sizes,
    TopHosts,
    WindowDump,
    by_window,
    host_totals_in_steps,
    merge,
    refuse_future,
)
from tophosts.store.frozen import Frozen, Selection
from tophosts.windows import (
    HOUR,
    MINUTE,
    Window,
    aligned,
    floors,
    hour_of,
    kept_until,
    minute_of,
    minute_span,
    past,
    settled_after,
)

# Dead windows and the digests of expired keys are freed a slice at a time, from
# one budget per call, so that dropping a window of a million hosts (or a minute
# of a million keys) never holds up the event loop for long: 5,000 hosts take
# about 1.4 ms (20,000 took 5.5, too close to 10 ms on a busy machine).
_FREE_PER_CALL = 5_000

_ONE = Added(1, 0)
_EXPIRED = Added(0, 1)

Prepared = tuple[dict[int, Counts], int]
"""A batch's counts summed per live minute, and how many of its events expired."""


class MemoryStore:
    kind = "memory"

    def __init__(
        self,
        clock: Clock = time.time,
        max_skew: int = 300,
        max_tracked_hosts: int = 1_000_000,
        idempotency_ttl: int | None = None,
        max_idempotency_keys: int = 1_000_000,
        retention: int = 0,
        history_top: int = 100,
    ) -> None:
        self._clock = clock
        self._max_skew = max_skew
        self._max_tracked = max_tracked_hosts
        self.retention = retention
        self.history_top = history_top
        # History: (size, start) -> the frozen record, in the order they froze; and
        # the windows that froze and whose top K is still being selected.
        self._frozen: dict[tuple[int, int], Frozen] = {}
        self._freezing: dict[tuple[int, int], Selection] = {}
        self._minutes: dict[int, Counts] = {}  # live minute start -> counts
        self._hours: dict[int, Counts] = {}  # live hour start -> counts of all its events
        self._totals: dict[int, int] = {}  # live hour start -> sum of all its counts
        # (size, start) -> (limit it was computed for, result)
        self._cache: dict[tuple[int, int], tuple[int, TopHosts]] = {}
        # Dead windows, and the digests of expired keys, still to be freed.
        self._graveyard: list[Counts | list[bytes]] = []
        # The minute [start, end) the windows were last rolled for; the clock's
        # being in it is two comparisons on the hot path, no call.
        self._minute_start = self._minute_end = 0
        # The last event's timestamp and its hour and minute (hour_of and minute_of
        # calls saved: a second brings many events of one timestamp).
        self._last_ts = -1
        self._last_hour = self._last_minute = 0
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

    @property
    def history(self) -> MemoryStore | None:
        return self if self.retention else None

    async def add(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        """:meth:`add_now`; a batch of over ``AT_ONCE_HOSTS`` host counts is summed per
        minute a slice at a time, the loop free between, then checked and applied at
        once."""
        if len(events) < 2:
            return self.add_now(events, key)
        totals = await host_totals_in_steps(events)
        if totals[-1] <= AT_ONCE_HOSTS:
            return self.add_now(events, key)
        await asyncio.sleep(0)  # each step below takes 1.5-2.6 ms at 56,000 events
        for _ in range(2):
            now = self._rolled_now()
            if key is not None and key[0] in self._keys:
                break  # a replay or a conflict: nothing to sum
            floors = self._hour_floor, self._minute_floor
            sums: dict[int, Counts] = {}
            expired = 0
            # The skew slice by slice: the first event past it is still the batch's first.
            for start, end in spans(totals, SLICE_HOSTS):
                part = events[start:end]
                self._too_far_ahead(now, part, start)
                expired += self._sum_minutes(part, sums)
                await asyncio.sleep(0)
            now = self._rolled_now()
            if (self._hour_floor, self._minute_floor) != floors:
                continue  # a minute left while summing: which events expired may differ
            if key is not None:
                return self._add_keyed(now, events, key, prepared=(sums, expired))
            return self._add(now, events, (sums, expired))
        return self.add_now(events, key)  # at once (the minute turned twice meanwhile)

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
        self._frozen.clear()
        self._freezing.clear()

    # -- history ---------------------------------------------------------------

    async def closed(self, window: Window, starts: Sequence[int], limit: int) -> list[TopHosts]:
        return self.closed_now(window, starts, limit)

    def closed_now(self, window: Window, starts: Sequence[int], limit: int) -> list[TopHosts]:
        """:meth:`closed`, answered at once."""
        size = window.value
        frozen = self._frozen
        out: list[TopHosts] = []
        for start in starts:
            record = frozen.get((size, start))
            out.append(
                record.top(limit) if record is not None else self._top_of(size, start, limit)
            )
        return out

    async def freeze(self) -> None:
        """Select the top K of every window that froze, a step per turn of the loop, and
        free the dead windows a slice per turn."""
        self._roll(self._clock())
        while self._freezing or self._graveyard:
            self.freeze_step()
            await asyncio.sleep(0)

    def freeze_step(self) -> None:
        """One step: a slice of the oldest selection under way, and of the dead windows."""
        if self._freezing:
            key, selection = next(iter(self._freezing.items()))
            record = selection.step()
            if record is not None:
                del self._freezing[key]
                self._cache.pop(key, None)
                self._graveyard.append(selection.counts)
                self._keep(key, record)
        if self._graveyard:
            self._free_some()

    def _keep(self, key: tuple[int, int], record: Frozen) -> None:
        """Keep a frozen record; the records stay in the order they leave the history."""
        frozen = self._frozen
        if frozen and _leaves(key) < _leaves(next(reversed(frozen))):
            frozen[key] = record  # out of order (a restore, a slow selection): sort again
            self._frozen = dict(sorted(frozen.items(), key=lambda kv: _leaves(kv[0])))
        else:
            frozen[key] = record

    def _start_freezing(self, size: int, start: int, counts: Counts) -> None:
        """Keep the window ``(size, start)``, which froze, until its top K is selected; a
        cached answer that already holds its top K makes that instant."""
        key = (size, start)
        cached = self._cache.get(key)
        if cached is not None and (cached[0] >= self.history_top or len(cached[1]) < cached[0]):
            self._graveyard.append(counts)
            self._cache.pop(key, None)
            self._keep(key, Frozen.of(cached[1][: self.history_top]))
            return
        self._freezing[key] = Selection(counts, self.history_top)

    # -- snapshots ------------------------------------------------------------

    def dump(self) -> list[WindowDump]:
        """Copies of the live windows: minutes, then hours (each with all its events); then
        the windows that froze and are not selected yet."""
        self._roll(self._clock())
        out: list[WindowDump] = [(MINUTE, start, dict(c)) for start, c in self._minutes.items()]
        out.extend((HOUR, start, dict(c)) for start, c in sorted(self._hours.items()))
        out.extend((size, start, dict(sel.counts)) for (size, start), sel in self._freezing.items())
        return out

    def dump_history(self) -> list[FrozenDump]:
        """The frozen windows, oldest first."""
        self._roll(self._clock())
        return [
            (size, start, list(record.hosts), record.counts.tolist())
            for (size, start), record in self._frozen.items()
        ]

    def restore_history(self, frozen: list[FrozenDump]) -> int:
        """Add dumped frozen windows, dropping those past the retention (and all of them
        with history off); a window this store holds already keeps its own."""
        now = self._clock()
        kept = 0
        for size, start, hosts, counts in frozen:
            key = (size, start)
            if (
                size not in (MINUTE, HOUR)
                or not aligned(size, start)
                or now >= kept_until(size, start, self.retention)
                or past(now, Window(size)).start <= start
                or key in self._frozen
                or key in self._freezing
            ):
                continue
            ranked = sorted(((h, n) for h, n in zip(hosts, counts, strict=False) if n), key=_rank)
            self._keep(key, Frozen.of(ranked[: self.history_top]))
            kept += 1
        return kept

    def restore(self, windows: list[WindowDump]) -> int:
        """Add dumped windows to this store, dropping those no query can reach any more."""
        self._minute_start = self._minute_end = 0
        self._roll(self._clock())
        now = self._clock()
        oldest = {MINUTE: self._minute_floor, HOUR: self._hour_floor}
        kept = 0
        for size, start, counts in windows:
            if size not in oldest or not aligned(size, start):
                continue
            nonzero = {host: n for host, n in counts.items() if n}
            if start < oldest[size]:
                # It froze while the server was down (or was freezing when it stopped).
                key = (size, start)
                if now >= kept_until(size, start, self.retention) or key in self._frozen:
                    continue
                kept += 1
                selection = self._freezing.pop(key, None)
                if selection is not None:
                    merge(nonzero, selection.counts)
                self._freezing[key] = Selection(nonzero, self.history_top)
                continue
            kept += 1
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
        self._minute_start = self._minute_end = 0
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

    def _rolled_now(self) -> float:
        """The clock, the windows rolled for it (and the dead ones freed a slice) if due;
        :meth:`add_one_now` writes this out, for the hottest path."""
        now = self._clock()
        if self._graveyard or not self._minute_start <= now < self._minute_end:
            self._roll(now)
        return now

    def add_now(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        now = self._rolled_now()
        if key is not None:
            return self._add_keyed(now, events, key)
        return self._add(now, events)

    def _add_keyed(
        self,
        now: float,
        events: Sequence[Event],
        key: Keyed,
        total: int | None = None,
        prepared: Prepared | None = None,
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
            added = self._add(now, events, prepared)
        keys[digest] = pack(fingerprint, added.expired)
        start = minute_of(int(now))
        used = self._key_minutes.get(start)
        if used is None:
            used = self._key_minutes[start] = []
        used.append(digest)
        return added

    def _add(self, now: float, events: Sequence[Event], prepared: Prepared | None = None) -> Added:
        """Check and apply a batch; ``prepared``: its minutes' sums and expired events,
        from :meth:`_sum_minutes` at the same floors, its skew already checked."""
        if prepared is not None:
            sums, expired = prepared
        else:
            if len(events) == 1:
                ts, counts = events[0]
                total = sum(counts.values())
                if self._add_one(now, ts, counts, total) is _EXPIRED:
                    return _EXPIRED
                return Added(1, 0, total)
            if not events:
                return Added(0, 0)
            self._too_far_ahead(now, events)
            sums = {}
            expired = self._sum_minutes(events, sums)
        minute_adds = [(start, hour_of(start), counts) for start, counts in sums.items()]
        # Per hour: what the batch adds to its total, and at most how many hosts
        # it adds (a host named in two minutes counts twice: a bound).
        added: dict[int, int] = {}
        hosts: dict[int, int] = {}
        for _, hour, counts in minute_adds:
            added[hour] = added.get(hour, 0) + sum(counts.values())
            hosts[hour] = hosts.get(hour, 0) + len(counts)

        # The limits are the hours' (see the module docstring): check their
        # cheap bounds, and the batch exactly only when one is crossed.
        totals, hours, cap = self._totals, self._hours, self._max_tracked
        if any(
            totals.get(hour, 0) + added[hour] > MAX_COUNT
            or len(hours.get(hour, ())) + hosts[hour] > cap
            for hour in added
        ):
            self._check_exactly(events)

        minute_floor = self._minute_floor
        for start, hour, counts in minute_adds:
            if not counts:
                continue
            if start >= minute_floor:
                self._merge(self._minutes, start, counts)
                self._forget(MINUTE, start)
            self._merge(hours, hour, counts)
        for hour, n in added.items():
            if n:
                totals[hour] = totals.get(hour, 0) + n
                self._forget(HOUR, hour)
        return Added(len(events) - expired, expired, sum(added.values()))

    def _too_far_ahead(self, now: float, events: Sequence[Event], first: int = 0) -> None:
        """Refuse the first event of a batch past the future skew."""
        refuse_future(events, now, self._max_skew, first)

    def _sum_minutes(self, events: Sequence[Event], sums: dict[int, Counts]) -> int:
        """Add each live event's counts to its minute's in ``sums`` (zero counts dropped),
        minutes in the order the events first name them; return how many expired."""
        # Group the live events by minute (a minute lies in one hour); a batch
        # names few distinct seconds, so each is looked up once (a dict lookup
        # an event, not a call).
        by_minute: dict[int, list[Counts]] = {}
        by_second: dict[int, list[Counts]] = {}
        expired = 0
        hour_floor = self._hour_floor
        for ts, counts in events:
            group = by_second.get(ts)
            if group is None:
                if ts < hour_floor:
                    expired += 1
                    continue
                group = by_second[ts] = by_minute.setdefault(minute_of(ts), [])
            group.append(counts)
        # Each host then touches each window dict once however many events of the
        # batch mention it.
        for start, group in by_minute.items():
            acc = sums.get(start)
            if acc is None:
                summed = _summed(group)
                # Never an event's own dict: a later slice may add to it.
                sums[start] = dict(summed) if summed is group[0] else summed
            else:
                _add_into(acc, group)  # a later slice: each host touched once, not twice
        return expired

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
        if self._graveyard or not self._minute_start <= now < self._minute_end:
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
        if ts != self._last_ts:
            self._last_ts, self._last_hour, self._last_minute = ts, hour_of(ts), minute_of(ts)
        hour = self._last_hour
        if total is None:
            total = sum(counts.values())
        total += self._totals.get(hour, 0)
        target = self._hours.get(hour)
        if target is None:
            if len(counts) > self._max_tracked:
                self._check_one(counts, {})
            target = self._hours[hour] = {}
        elif total > MAX_COUNT or len(target) + len(counts) > self._max_tracked:
            self._check_one(counts, target)
        self._totals[hour] = total
        get = target.get
        cache = self._cache
        if ts >= self._minute_floor:
            # One pass over the hosts for the hour and the live minute.
            start = self._last_minute
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

    def _check_one(self, counts: Counts, known: Counts) -> None:
        """:meth:`_check_exactly` of one event (no zero counts) of a live hour whose
        hosts are ``known``, without the batch machinery: the refusal a full hour gives
        each new host's event is the cap's most frequent answer."""
        for host, n in counts.items():
            if known.get(host, 0) + n > MAX_COUNT:
                raise total_too_large(host, 0)
        room = self._max_tracked - len(known)
        for host in counts:
            if host not in known:
                if room <= 0:
                    raise too_many_tracked(HOUR, host, self._max_tracked, 0)
                room -= 1

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
        return self._top_of(window.value, past(now, window).start, limit)

    def _top_of(self, size: int, start: int, limit: int) -> TopHosts:
        """The top ``limit`` of the live (or freezing) window ``(size, start)``, cached."""
        key = (size, start)
        cached = self._cache.get(key)
        if cached is not None and limit <= cached[0]:
            return cached[1][:limit]
        selection = self._freezing.get(key)
        if selection is not None:
            counts: Counts | None = selection.counts
        else:
            counts = (self._minutes if size == MINUTE else self._hours).get(start)
        if not counts:
            return []
        result = _top(counts, limit)
        self._cache[key] = (limit, result)
        return result

    def _roll(self, now: float) -> None:
        """Drop the windows no query can reach any more, and the expired keys; cheap
        unless the minute turned."""
        if not self._minute_start <= now < self._minute_end:
            self._roll_over(now)
        if self._graveyard:
            self._free_some()

    def _roll_over(self, now: float) -> None:
        self._minute_start, self._minute_end = minute_span(now)
        self._minute_floor, self._hour_floor = minute_floor, hour_floor = floors(now)
        for size, windows, floor in (
            (HOUR, self._hours, hour_floor),
            (MINUTE, self._minutes, minute_floor),
        ):
            for start in [s for s in windows if s < floor]:
                counts = windows.pop(start)
                if size == HOUR:
                    self._totals.pop(start, None)
                if now < kept_until(size, start, self.retention):
                    self._start_freezing(size, start, counts)
                else:
                    self._graveyard.append(counts)
                    self._cache.pop((size, start), None)
        if self._frozen or self._freezing:
            self._expire(now)
        # Answers cached for windows no query can reach (an empty past window, say).
        for key in [
            k for k in self._cache if k[1] < (minute_floor if k[0] == MINUTE else hour_floor)
        ]:
            if key not in self._freezing:
                del self._cache[key]
        # A key used in the minute ``start`` is kept while the clock reads less than
        # start + MINUTE + kept_for (see tophosts.idempotency).
        kept_for = self._kept_for
        for start in [s for s in self._key_minutes if s + MINUTE + kept_for <= now]:
            dead = self._key_minutes.pop(start)
            self._dying += len(dead)
            self._graveyard.append(dead)

    def _expire(self, now: float) -> None:
        """Drop the frozen (and freezing) windows past the retention."""
        retention = self.retention
        frozen = self._frozen
        while frozen:
            size, start = key = next(iter(frozen))
            if now < kept_until(size, start, retention):
                break
            del frozen[key]
        for key in [k for k in self._freezing if now >= kept_until(k[0], k[1], retention)]:
            self._graveyard.append(self._freezing.pop(key).counts)
            self._cache.pop(key, None)

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


def _leaves(key: tuple[int, int]) -> int:
    """When the window ``(size, start)`` leaves the history, but for the retention (the
    same for every window): the order of the frozen records."""
    size, start = key
    return kept_until(size, start, 0)


def _add_into(acc: Counts, group: list[Counts]) -> None:
    """Add each of ``group`` to ``acc``, host by host, without their zero counts."""
    for counts in group:
        merge(acc, {host: n for host, n in counts.items() if n} if 0 in counts.values() else counts)


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
