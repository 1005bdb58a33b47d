"""Where counts live: the :class:`Store` protocol and :func:`open_store`.

The app talks to a store through this protocol alone. Every store keeps the
same semantics to the letter: clock-aligned windows, expired and future events,
top N with ties broken by host name, zero totals never listed, batches that
are applied whole or not at all, and idempotency keys whose outcome is kept
atomically with the counts (:mod:`tophosts.idempotency`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import NamedTuple, Protocol

from tophosts.events import TOTALS_STEP, Event, running_totals, spans, too_far_ahead
from tophosts.idempotency import Keyed
from tophosts.windows import HOUR, MINUTE, Window, hour_of, minute_of, settled_after

Clock = Callable[[], float]
TopHosts = list[tuple[str, int]]
Counts = dict[str, int]


class Added(NamedTuple):
    accepted: int
    expired: int
    host_counts: int = 0
    """The sum of the counts of the accepted events."""
    replayed: bool = False
    """The outcome kept for the request's idempotency key: nothing was applied now."""


class Sizes(NamedTuple):
    """Size figures for metrics: tracked (host, window) pairs, live windows, live keys."""

    minute_hosts: int
    hour_hosts: int
    windows: int
    keys: int = 0


WindowDump = tuple[int, int, Counts]
"""``(size, start, counts)``: one live window, as snapshots hold it."""

KeyDump = tuple[int, bytes, list[int]]
"""``(minute start, digests, records)``: the idempotency keys used in one minute, as
snapshots hold them: their digests end to end, and one packed record each."""

FrozenDump = tuple[int, int, list[str], list[int]]
"""``(size, start, hosts, counts)``: one frozen window's top hosts in ``/stats`` order, as
snapshots hold it."""


class SyncStore(Protocol):
    """Capability: a store that answers without waiting on I/O (the memory store).

    The app calls these directly on the fast lane: no coroutine per request.
    They behave exactly as :meth:`Store.add` and :meth:`Store.top`.
    """

    def add_now(self, events: Sequence[Event], key: Keyed | None = None) -> Added: ...

    def add_one_now(
        self, ts: int, counts: Counts, total: int | None = None, key: Keyed | None = None
    ) -> Added:
        """``add_now([(ts, counts)], key)``; ``total``, if given, is
        ``sum(counts.values())``, and the answer's ``host_counts`` is then left at 0."""
        ...

    def top_now(self, window: Window, limit: int, now: float | None = None) -> TopHosts: ...


class Snapshots(Protocol):
    """Capability: a store whose whole state can be kept in a file across restarts."""

    def dump(self) -> list[WindowDump]:
        """Copies of the live windows."""
        ...

    def restore(self, windows: list[WindowDump]) -> int:
        """Add dumped windows, dropping those no query can reach; returns how many were kept.
        With history on, a window that froze while the server was down is frozen now."""
        ...

    def dump_history(self) -> list[FrozenDump]:
        """The frozen windows (none with history off)."""
        ...

    def restore_history(self, frozen: list[FrozenDump]) -> int:
        """Add dumped frozen windows, dropping those past the retention; returns how many
        were kept."""
        ...

    def dump_keys(self) -> list[KeyDump]:
        """Copies of the live idempotency keys, a minute at a time."""
        ...

    def restore_keys(self, keys: list[KeyDump]) -> int:
        """Add dumped keys, dropping those expired; returns how many were kept."""
        ...


class History(Protocol):
    """Capability: the top hosts of closed windows, kept for :attr:`retention` seconds
    after they freeze (see :mod:`tophosts.windows`).

    A window freezes when it stops being the past window; from then on no event
    changes it, and what it answers is what :meth:`Store.top` answered for it at
    its last moment as the past window.
    """

    history_top: int
    """Hosts kept of each window (``--history-top``): any limit up to it is exact."""
    retention: int
    """Seconds a frozen window is kept (``--retention``); more than 0."""

    async def closed(self, window: Window, starts: Sequence[int], limit: int) -> list[TopHosts]:
        """The top ``limit`` (at most :attr:`history_top`) of each closed window ``start`` (the
        past one, or a frozen one within the retention), in order: from its frozen
        record, or from its live data until it is frozen. No data answers ``[]``."""
        ...

    async def freeze(self) -> None:
        """Freeze the windows that are due, never holding the event loop for long (a
        slice at a time). The app runs this in the background every second; answers
        never depend on whether it has run yet."""
        ...


class Store(Protocol):
    kind: str
    """``"memory"`` or ``"redis"``."""

    @property
    def sync(self) -> SyncStore | None:
        """This store's synchronous face, or None if it has none."""
        ...

    @property
    def snapshots(self) -> Snapshots | None:
        """This store's snapshot support, or None if it keeps its own data."""
        ...

    @property
    def history(self) -> History | None:
        """This store's history of closed windows, or None with ``--retention 0``."""
        ...

    async def add(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        """Apply a validated batch atomically.

        Raises :class:`tophosts.events.EventError` (and applies nothing) when an
        event is too far in the future, would overflow a total, or would add a
        host past ``--max-tracked-hosts``; its ``index`` is the event's position
        in ``events``, also for a batch of one. In that order: skew, then
        overflow anywhere, then the cap anywhere, each looked for in the windows
        in the order the events first name them (see :func:`by_window`). Events
        older than the past round hour are counted as expired and not stored;
        zero counts are never stored.

        A batch of more than ``AT_ONCE_HOSTS`` host counts is prepared a slice at a
        time (:func:`host_slices`), the event loop free between slices, and checked
        and applied at once: other requests may run meanwhile, and what they add
        counts in its checks, but none sees it half applied.

        With ``key``, after the skew check: if the key has a live record, nothing is
        applied, and the answer is its outcome with ``replayed`` set when the
        fingerprint matches, else :class:`~tophosts.idempotency.KeyConflict`; if
        another request with the key is in flight where this one cannot see it
        (another instance), :class:`~tophosts.idempotency.KeyInFlight`; if the
        store already keeps ``--max-idempotency-keys`` live keys,
        :class:`~tophosts.idempotency.KeysFull`. Otherwise the request is
        applied (or refused) as without a key, and an outcome that applied it is
        recorded atomically with its counts. Refusals are not recorded.
        """
        ...

    def begin(self, digest: bytes) -> None:
        """Mark a key in flight from the moment its request's headers are in, before its
        body is read; raise :class:`~tophosts.idempotency.KeyInFlight` if it already
        is. Every :meth:`begin` that returns is followed by one :meth:`end`."""
        ...

    async def claim(self, digest: bytes) -> None:
        """The body of the request that began ``digest`` is still arriving: make its mark
        seen by every process sharing the store (a no-op where there is one), or raise
        :class:`~tophosts.idempotency.KeyInFlight` if one of them holds it."""
        ...

    def end(self, digest: bytes) -> None:
        """The request that began ``digest`` is answered."""
        ...

    async def top(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        """The top ``limit`` hosts of the past round ``window`` at clock reading ``now``
        (the store's own clock if None): count descending, then host."""
        ...

    async def sizes(self) -> Sizes: ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the store cannot serve right now."""
        ...

    async def close(self) -> None: ...


class StoreUnavailable(RuntimeError):
    """The backing service is down or too slow; nothing was applied."""


class WriteUncertain(RuntimeError):
    """A write reached the backing service, which then stopped answering before it could
    say whether the write was applied: it may or may not have been."""


def merge(into: Counts, counts: Counts) -> None:
    """Add ``counts`` to ``into``, host by host."""
    get = into.get
    for host, n in counts.items():
        into[host] = get(host, 0) + n


def by_window(
    events: Sequence[Event], hour_floor: int, minute_floor: int
) -> tuple[dict[tuple[int, int], Counts], int]:
    """Sum a batch per window: ``{(window size, start): counts}`` and how many events are
    expired (before ``hour_floor``). An event counts in its hour, and in its minute from
    ``minute_floor`` on. Windows come in the order the events first name them, an
    event's hour before its minute, and in each its hosts in the order they first
    appear with a count above 0 (a count of 0 is as if absent): both stores check them
    in that order, so that they refuse a batch naming the same window, host and event."""
    merged: dict[tuple[int, int], Counts] = {}
    return merged, _by_window_into(merged, events, hour_floor, minute_floor)


AT_ONCE_HOSTS = 16_384
"""A batch of up to this many host counts (the hosts of all its events) is summed per
window in one step of the event loop, about 2.5 ms on this project's machine; a
larger one a slice at a time (:func:`host_slices`)."""

SLICE_HOSTS = 2_048
"""The host counts summed in one step, past ``AT_ONCE_HOSTS``: about 0.3 ms."""


def _host_counts(events: Sequence[Event]) -> Iterable[int]:
    return map(len, map(itemgetter(1), events))


def host_totals(events: Sequence[Event]) -> list[int]:
    """The running total of a batch's host counts, event by event: the last is what
    summing the batch costs."""
    return list(itertools.accumulate(_host_counts(events)))


async def host_totals_in_steps(events: Sequence[Event]) -> list[int]:
    """:func:`host_totals`; of a batch of over ``TOTALS_STEP`` events, that many a step,
    the loop free between."""
    if len(events) <= TOTALS_STEP:
        return host_totals(events)
    totals: list[int] = []
    for _ in running_totals(events, _host_counts, totals):
        await asyncio.sleep(0)
    return totals


def refuse_future(events: Sequence[Event], now: float, max_skew: int, first: int = 0) -> None:
    """Refuse the first of ``events`` (``first``: the index of the first in its batch)
    stamped past ``now + max_skew``."""
    horizon = now + max_skew
    stamps = [ts for ts, _ in events]
    if stamps and max(stamps) > horizon:
        i = next(i for i, ts in enumerate(stamps) if ts > horizon)
        raise too_far_ahead(stamps[i], now, max_skew, first + i)


async def refuse_future_in_steps(events: Sequence[Event], now: float, max_skew: int) -> None:
    """:func:`refuse_future`, ``TOTALS_STEP`` events a step past that many."""
    for start in range(0, len(events), TOTALS_STEP):
        refuse_future(events[start : start + TOTALS_STEP], now, max_skew, start)
        if len(events) > TOTALS_STEP:
            await asyncio.sleep(0)


def host_slices(events: Sequence[Event], totals: Sequence[int]) -> Iterator[Sequence[Event]]:
    """``events`` in slices of about ``SLICE_HOSTS`` host counts (one event at least);
    ``totals``: their :func:`host_totals`."""
    for start, end in spans(totals, SLICE_HOSTS):
        yield events[start:end]


async def by_window_in_slices(
    events: Sequence[Event], totals: Sequence[int], hour_floor: int, minute_floor: int
) -> tuple[dict[tuple[int, int], Counts], int]:
    """:func:`by_window`, a slice at a time (:func:`host_slices`), the loop free between."""
    merged: dict[tuple[int, int], Counts] = {}
    expired = 0
    for part in host_slices(events, totals):
        expired += _by_window_into(merged, part, hour_floor, minute_floor)
        await asyncio.sleep(0)
    return merged, expired


def _by_window_into(
    merged: dict[tuple[int, int], Counts],
    events: Sequence[Event],
    hour_floor: int,
    minute_floor: int,
) -> int:
    expired = 0
    for ts, counts in events:
        if ts < hour_floor:
            expired += 1
            continue
        if 0 in counts.values():
            counts = {host: n for host, n in counts.items() if n}
        keys = [(HOUR, hour_of(ts))]
        if ts >= minute_floor:
            keys.append((MINUTE, minute_of(ts)))
        for key in keys:
            acc = merged.get(key)
            if acc is None:
                merged[key] = dict(counts)  # a copy: the event's dict is merged elsewhere too
            else:
                merge(acc, counts)
    return expired


def open_store(
    url: str = "memory",
    *,
    clock: Clock = time.time,
    max_skew: int = 300,
    max_tracked_hosts: int = 1_000_000,
    idempotency_ttl: int | None = None,
    max_idempotency_keys: int = 1_000_000,
    retention: int = 0,
    history_top: int = 100,
    redis_prefix: str = "tophosts",
    redis_timeout: float = 1.0,
    body_timeout: float = 30.0,
) -> Store:
    """Open the store named by ``url``: ``memory`` (the default) or ``redis://…``.

    ``idempotency_ttl`` defaults to :func:`tophosts.windows.settled_after`.
    ``retention`` seconds of history (0, the default here, keeps none; the
    server's ``--retention`` is 24 h) of the top ``history_top`` hosts of each
    window. The ``redis_*`` options only apply to a Redis store, and so does
    ``body_timeout`` (how long an in-flight mark in Redis lasts).
    """
    ttl = settled_after(max_skew) if idempotency_ttl is None else idempotency_ttl
    if url in ("memory", "memory://"):
        from tophosts.store.memory import MemoryStore

        return MemoryStore(
            clock=clock,
            max_skew=max_skew,
            max_tracked_hosts=max_tracked_hosts,
            idempotency_ttl=ttl,
            max_idempotency_keys=max_idempotency_keys,
            retention=retention,
            history_top=history_top,
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tophosts.store.redis import RedisStore

        return RedisStore(
            url,
            clock=clock,
            max_skew=max_skew,
            prefix=redis_prefix,
            timeout=redis_timeout,
            max_tracked_hosts=max_tracked_hosts,
            idempotency_ttl=ttl,
            max_idempotency_keys=max_idempotency_keys,
            body_timeout=body_timeout,
            retention=retention,
            history_top=history_top,
        )
    raise ValueError(f"unknown store {url!r}; use 'memory' or a redis:// URL")
