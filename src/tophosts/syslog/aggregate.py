"""Lines summed per (second, host) between flushes, and the flusher that applies them.

The receiving path only bumps ``table[(second, host_bytes)]``. At least every
:data:`INTERVAL` seconds (and once more at shutdown) the flusher takes each
listener's table and applies every (second, host) sum as an event of its own,
``(second, {host: n})``, through the store, so that one refused host never
refuses another. A host is decoded and checked (the rules of
:func:`tophosts.events.check_host`) once per distinct host, not per line.

Each line lands in exactly one result, once: accepted or expired (as the store
answers), refused (a host rule, the store's skew bound or
``--max-tracked-hosts``, a full table, or a store that stays unavailable), or
unparsed (counted where it is read). A store that is unavailable (nothing was
applied) gets the sums again at the next flush; one that cannot say whether it
applied them (Redis's 504 case) gets them counted as refused,
``write_uncertain``, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from tophosts.events import Event, EventError, check_host
from tophosts.formats import bad_timestamp
from tophosts.store import Added, Clock, Store, StoreUnavailable, WriteUncertain
from tophosts.syslog.counts import Tally
from tophosts.syslog.lines import Key, second

log = logging.getLogger("tophosts.syslog")

INTERVAL = 0.1
"""Seconds between flushes at most."""
MAX_PENDING = 100_000
"""Distinct (second, host) pairs a listener holds between flushes. At the bound a
UDP line of a new pair is refused (``pending_full``) while known pairs keep counting,
and a TCP connection stops reading until the next flush."""
_CONCURRENT = 512
"""Events handed to an asynchronous store at once (the Redis group commit coalesces them)."""
_YIELD_EVERY = 256
"""Events applied synchronously between two yields to the event loop (about 1 ms)."""
_HOST_CACHE = 10_000


class Pending:
    """The lines of one listener not applied yet."""

    def __init__(self, tally: Tally, limit: int = MAX_PENDING) -> None:
        self.tally = tally
        self.limit = limit
        self.table: dict[Key, int] = {}
        """(second, host as sent) -> lines: bumped in place by the protocols."""
        self.paused: set[asyncio.BaseTransport] = set()
        """TCP transports that stopped reading at the bound, resumed after a flush."""
        self.full = asyncio.Event()
        """Set when the table reaches its bound, to flush at once."""

    def refuse_full(self, key: Key) -> None:
        self.full.set()
        self.tally.bad(
            "refused",
            "pending_full",
            1,
            f"{self.limit} (second, host) pairs are waiting for the store; lines of new "
            "pairs are refused until it catches up",
            key,
        )


class Flusher:
    """Applies the pending tables to the store."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        max_skew: int,
        pendings: Sequence[Pending],
        interval: float = INTERVAL,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_skew = max_skew
        self.pendings = list(pendings)
        self.interval = interval
        # A store that applies synchronously (the memory store): no coroutine per event.
        sync = store.sync
        self._add_now: Callable[[Sequence[Event]], Added] | None = (
            sync.add_now if sync is not None else None
        )
        self._hosts: dict[bytes, str | tuple[str, str]] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Flush every ``interval`` s (sooner when a table fills) while inside. On the way
        out, let a flush under way finish, then flush what is left, for good."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._loop(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await self.flush()  # a store that was unavailable gets one more try
            await self.flush(final=True)

    async def _loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.flush()
            except Exception:  # never let one bad flush stop the flushing
                log.exception("syslog: a flush failed; its lines may be lost")
            delay = self.interval - (loop.time() - started)
            wakers = [
                asyncio.ensure_future(e.wait()) for e in (stop, *(p.full for p in self.pendings))
            ]
            try:
                await asyncio.wait(
                    wakers, timeout=max(delay, 0), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waker in wakers:
                    waker.cancel()

    async def flush(self, final: bool = False) -> None:
        """Apply every pending line. ``final``: the store will not be asked again, so a
        store that is unavailable refuses the lines instead of keeping them."""
        async with self._lock:
            for pending in self.pendings:
                pending.full.clear()
                if pending.table:
                    batch = pending.table.copy()
                    pending.table.clear()
                    await self._apply(pending, batch, final)
                for transport in pending.paused:
                    if not transport.is_closing():
                        transport.resume_reading()  # type: ignore[attr-defined]
                pending.paused.clear()

    def _host(self, raw: bytes) -> str | tuple[str, str]:
        """The host, or ``(reason, message)`` for one no ingest path accepts."""
        known = self._hosts.get(raw)
        if known is not None:
            return known
        found: str | tuple[str, str]
        try:
            found = raw.decode()
            check_host(found)
        except UnicodeDecodeError:
            found = ("host_utf8", "the host name is not valid UTF-8")
        except EventError as exc:
            found = ("host", exc.message)
        if len(self._hosts) >= _HOST_CACHE:
            self._hosts.clear()
        self._hosts[raw] = found
        return found

    async def _apply(self, pending: Pending, batch: dict[Key, int], final: bool) -> None:
        tally = pending.tally
        lines = tally.lines
        # Keys from the fast path hold the digits of the second: read them once per
        # key, and merge keys that name the same second.
        merged: dict[tuple[int, bytes], int] = {}
        for raw, n in batch.items():
            ts = second(raw)
            if ts is None:
                tally.bad("unparsed", "timestamp", n, bad_timestamp().detail, raw)
                continue
            pair = (ts, raw[1])
            merged[pair] = merged.get(pair, 0) + n
        events: list[tuple[tuple[int, bytes], int, Event]] = []
        for key, n in merged.items():
            host = self._host(key[1])
            if isinstance(host, tuple):
                tally.bad("refused", host[0], n, host[1], key)
                continue
            events.append((key, n, (key[0], {host: n})))
        add_now = self._add_now
        if add_now is not None:
            for i, (key, n, event) in enumerate(events):
                try:
                    added = add_now((event,))
                except EventError as exc:
                    self._refused(tally, key, n, exc)
                else:
                    lines["accepted" if added.accepted else "expired"] += n
                if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            return
        add = self.store.add
        for start in range(0, len(events), _CONCURRENT):
            chunk = events[start : start + _CONCURRENT]
            results = await asyncio.gather(
                *(add((event,)) for _, _, event in chunk), return_exceptions=True
            )
            for (key, n, _), result in zip(chunk, results, strict=True):
                if isinstance(result, Added):
                    lines["accepted" if result.accepted else "expired"] += n
                elif isinstance(result, EventError):
                    self._refused(tally, key, n, result)
                elif isinstance(result, StoreUnavailable) and not final:
                    # Nothing was applied: try again at the next flush.
                    table = pending.table
                    table[key] = table.get(key, 0) + n
                elif isinstance(result, StoreUnavailable):
                    tally.bad("refused", "store_unavailable", n, str(result), key)
                elif isinstance(result, WriteUncertain):
                    tally.bad(
                        "refused",
                        "write_uncertain",
                        n,
                        f"the store may or may not have counted them: {result}",
                        key,
                    )
                elif isinstance(result, BaseException):
                    log.error("syslog: applying %r failed", key, exc_info=result)
                    tally.bad("refused", "error", n, repr(result), key)

    def _refused(self, tally: Tally, key: tuple[int, bytes], n: int, exc: EventError) -> None:
        if exc.status == 429:
            reason = "max_tracked_hosts"
        elif key[0] > self.clock() + self.max_skew:
            reason = "too_far_ahead"
        else:
            reason = "total_too_large"
        tally.bad("refused", reason, n, exc.message, key)
