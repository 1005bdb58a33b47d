"""The group commit: concurrent requests go to Redis together, each applied or
refused on its own.

While one script call is in flight, the requests that arrive queue up and go
together in the next call (at most :data:`_IN_FLIGHT` calls at once, each of
at most :data:`_OPS_PER_CALL` increments). The script applies each request's
events all-or-nothing, in arrival order, so one request's refusal never
touches another's; each request is answered once its own events are applied.
A request with an idempotency key is looked up, and its outcome kept, in the
same call as its counts: a replay, conflict or full store is an outcome of that
request alone. A call that was sent and got no reply is handed over to be
settled (:mod:`tophosts.store.redis.settle`) before its requests are answered.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import msgspec
from redis import exceptions as rex
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript

from tophosts import idempotency
from tophosts.events import MAX_COUNT, Event, EventError, too_many_tracked, total_too_large
from tophosts.idempotency import KeyConflict, KeyInFlight, KeysFull
from tophosts.store import Clock, Counts, StoreUnavailable, merge
from tophosts.store.redis.clock import RedisClock
from tophosts.store.redis.connection import Failures, Link, evalsha
from tophosts.store.redis.keys import Keys, ttl_ms
from tophosts.windows import floor

Add = tuple[int, int, Counts]
"""``(window size, window start, {host: count})``: what one request adds to one window."""

# Share of the timeout within which Redis must *start* an ingest call. The rest
# of the timeout is margin for the reply to come back, so that a call that ran
# is (all but) never reported as failed.
START_SHARE = 0.5
# Extra wait per (host, window) increment, for very large calls: measured at
# 2.4 us each in Redis (5 when totals are checked host by host), so a big
# batch that started in time is not given up on (503) while it runs.
_WAIT_PER_OP = 10e-6
# Most (host, window) increments per script call; one request larger than this
# still goes whole, in a call of its own.
_OPS_PER_CALL = 20_000
# Script calls in flight at once: while one waits on Redis, the next one is
# already collecting and sending, so neither side sits idle.
_IN_FLIGHT = 2

_msgpack = msgspec.msgpack.Encoder().encode

Outcome = BaseException | int | None
"""What became of one request: None, applied as sent; an int, the replay of the outcome
kept for its idempotency key (that many of its events were expired); or its refusal."""


class Limits(NamedTuple):
    max_tracked: int
    """--max-tracked-hosts"""
    max_keys: int
    """--max-idempotency-keys"""
    ttl: int
    """--idempotency-ttl, resolved"""


class KeyInfo(NamedTuple):
    """A request's idempotency key, as the ingest scripts take it (see check_keys.lua)."""

    record: str
    """Its Redis key (see keys.py)."""
    digest: str
    """In hex: its member of the index."""
    fingerprint: str
    expired: str
    """What its outcome keeps: how many of the request's events are expired."""
    token: str
    """The token of its in-flight mark in Redis, '' if it has none."""


class Request:
    """One request's adds, waiting for (or riding in) a script call."""

    __slots__ = ("adds", "events", "future", "key", "ops")

    def __init__(
        self,
        adds: list[Add],
        events: Sequence[Event],
        future: asyncio.Future[int | None],
        key: KeyInfo | None = None,
    ):
        self.adds = adds
        self.events = events
        self.future = future
        self.key = key
        self.ops = sum(len(counts) for _, _, counts in adds)


class Unsettled(Exception):
    """An ingest call was sent, and then its reply did not come: it may have applied."""

    def __init__(
        self,
        token: str,
        seq: int,
        sent: float,
        deadline: int,
        careful: bool,
        cause: StoreUnavailable,
    ):
        super().__init__(str(cause))
        self.token = token
        self.seq = seq
        self.sent = sent  # time.monotonic() when the call was sent
        self.deadline = deadline  # its start deadline, on the Redis clock (us)
        self.careful = careful  # add_carefully: its refusals are in the writes hash
        self.cause = cause


OnUnsettled = Callable[[list[Request], Unsettled], None]


class GroupCommit:
    def __init__(
        self,
        keys: Keys,
        failures: Failures,
        clock: Clock,
        redis_clock: RedisClock,
        limits: Limits,
        link: Callable[[], Link],
        prepare: Callable[[Link], Awaitable[None]],
        on_unsettled: OnUnsettled,
    ) -> None:
        self._keys = keys
        self._failures = failures
        self._timeout = failures.timeout
        self._clock = clock
        self._redis_clock = redis_clock
        self._limits = limits
        self._max_tracked = limits.max_tracked
        self._link = link
        self._prepare = prepare  # before the first call on a link: clock, sweep
        self._on_unsettled = on_unsettled
        self._queue: list[Request] = []
        self.flushers: set[asyncio.Task[None]] = set()
        # Write tokens: one per connection, until a call on it fails.
        self.instance = os.urandom(6).hex()
        self.serial = itertools.count(1)
        self.tokens: weakref.WeakKeyDictionary[AbstractConnection, str] = (
            weakref.WeakKeyDictionary()
        )

    def reset(self) -> None:
        """Forget the queue and tasks of an event loop that is gone."""
        self._queue = []
        self.flushers = set()

    async def commit(
        self, adds: list[Add], events: Sequence[Event], key: KeyInfo | None = None
    ) -> int | None:
        """Apply ``adds`` (one request, from ``events``) and return once they are, or raise
        its refusal (:class:`EventError`, :class:`~tophosts.idempotency.KeyRefused`),
        StoreUnavailable, or WriteUncertain. With ``key``: None if applied and its
        outcome kept, or, for a replay, how many events the kept outcome says expired."""
        self._link()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        self._queue.append(Request(adds, events, future, key))
        if len(self.flushers) < _IN_FLIGHT:
            task = loop.create_task(self._flush())
            self.flushers.add(task)
            task.add_done_callback(self.flushers.discard)
        return await future

    async def _flush(self) -> None:
        link = self._link()
        # A flusher keeps one connection while there is work: going through
        # the client's execute_command and pool for every call costs about
        # as much CPU again as the call itself.
        connection: AbstractConnection | None = None
        batch: list[Request] = []
        try:
            while self._queue:
                batch = self._take()
                try:
                    if connection is None:
                        # Two turns of the loop first, for a close by Redis that
                        # has arrived to be read: the pool checks only what has
                        # been read, and a write sent on a connection Redis had
                        # closed could not be told from one it got and then died.
                        await asyncio.sleep(0)
                        await asyncio.sleep(0)
                        connection = await self._failures.call(link.pool.get_connection())  # type: ignore[no-untyped-call]
                    refusals = await self._apply(batch, link, connection)
                except StoreUnavailable as exc:
                    # What queued meanwhile would most likely fail too: do not
                    # make it wait another timeout. Nothing was applied.
                    for request in batch:
                        resolve(request.future, StoreUnavailable(str(exc)))
                    self.fail_queue(exc)
                    continue
                except Unsettled as unsettled:
                    # Sent, but no reply: learn whether it applied before answering.
                    self.fail_queue(unsettled.cause)
                    self._on_unsettled(batch, unsettled)
                    batch = []
                    continue
                for request, refusal in zip(batch, refusals, strict=True):
                    resolve(request.future, refusal)
        except Exception as exc:
            # A bug: fail the requests with it (a 500) rather than leave them hanging.
            for request in (*batch, *self._queue):
                resolve(request.future, exc)
            self._queue = []
        except BaseException:
            self.fail_queue(StoreUnavailable("the store is shutting down"), batch)
            raise
        finally:
            # Give up the slot before anything else is awaited: a request that
            # queues from now on must find room to start a flusher of its own.
            self.flushers.discard(asyncio.current_task())
            if connection is not None:
                await link.pool.release(connection)

    def _take(self) -> list[Request]:
        """The oldest requests, up to _OPS_PER_CALL increments (at least one request)."""
        take = ops = 0
        for request in self._queue:
            ops += request.ops
            if take and ops > _OPS_PER_CALL:
                break
            take += 1
        batch = self._queue[:take]
        del self._queue[:take]
        return batch

    def fail_queue(self, exc: StoreUnavailable, also: Sequence[Request] = ()) -> None:
        """Answer every queued request (and ``also``) with ``exc``: nothing was applied."""
        queue, self._queue = self._queue, []
        for request in (*also, *queue):
            resolve(request.future, StoreUnavailable(str(exc)))

    async def _apply(
        self, batch: list[Request], link: Link, connection: AbstractConnection
    ) -> list[Outcome]:
        """Run one ingest script call for ``batch``; one outcome per request."""
        if self._redis_clock.offset is None:
            await self._prepare(link)

        now = self._clock()
        # Everything the call adds, merged per window key.
        merged: dict[tuple[int, int], Counts] = {}
        for request in batch:
            for size, start, counts in request.adds:
                acc = merged.get((size, start))
                if acc is None:
                    merged[(size, start)] = dict(counts)
                else:
                    merge(acc, counts)
        keys = [*(self._keys.window(size, start) for size, start in merged), self._keys.writes]
        ttls = [ttl_ms(size, start, now) for size, start in merged]
        keyed = [(i, request.key) for i, request in enumerate(batch, 1) if request.key]
        extra: list[bytes] = []
        if keyed:
            # See check_keys.lua. Integer seconds: expiries are whole seconds.
            keys.append(self._keys.index)
            keys.extend(key.record for _, key in keyed)
            limits = self._limits
            expiry = idempotency.expiry(now, limits.ttl)
            ttl = max(1, math.ceil((expiry - now) * 1000))
            entries = [(i, k.fingerprint, k.expired, k.token, k.digest) for i, k in keyed]
            extra.append(_msgpack((int(now), expiry, ttl, limits.max_keys, entries)))
        adding = [str(sum(acc.values())) for acc in merged.values()]
        pairs: list[list[str]] = []
        for acc in merged.values():
            flat: list[str] = []
            for host, n in acc.items():
                flat.append(host)
                flat.append(str(n))
            pairs.append(flat)
        ops = sum(map(len, pairs)) // 2
        data = (ttls, adding, pairs, self._max_tracked)
        reply = await self._run(link.add, connection, keys, data, ops, extra)
        if reply[0] == 1:
            return [None] * len(batch)

        # Some total would come near 2^53 - 1, or a window near the cap: check
        # request by request.
        slots = {key: i for i, key in enumerate(merged, 1)}
        groups = [
            [
                [
                    slots[(size, start)],
                    *itertools.chain.from_iterable((host, str(n)) for host, n in counts.items()),
                ]
                for size, start, counts in request.adds
            ]
            for request in batch
        ]
        ops = sum(request.ops for request in batch)
        careful = (ttls, groups, self._max_tracked)
        reply = await self._run(
            link.add_carefully, connection, keys, careful, ops * 2, extra, careful=True
        )
        return refusals_of(batch, reply[3], self._limits)

    async def _run(
        self,
        script: AsyncScript,
        connection: AbstractConnection,
        keys: list[str],
        data: tuple[Any, ...],
        ops: int,
        extra: list[bytes],
        careful: bool = False,
    ) -> Any:
        """One ingest script call, with the deadline to start by.

        Raises StoreUnavailable when nothing was applied: Redis could not be
        reached, refused the call, or got to it too late. Raises Unsettled
        when the call was sent and no reply came in time: it may have applied.
        """
        if not connection.is_connected:
            await self._failures.call(connection.connect())  # type: ignore[no-untyped-call]
        token = self.tokens.get(connection)
        if token is None:
            token = self.tokens[connection] = f"{self.instance}.{next(self.serial)}"
        seq = next(self.serial)
        payload = _msgpack(data)
        wait = self._timeout + ops * _WAIT_PER_OP
        sent = time.monotonic()
        deadline = self._redis_clock.deadline(sent + self._timeout * START_SHARE)
        try:
            async with asyncio.timeout(wait):
                reply = await evalsha(
                    connection, script, [*keys, deadline, payload, token, seq, *extra], len(keys)
                )
        except (rex.ResponseError, rex.BusyLoadingError) as exc:
            # An error reply: nothing ran. That includes -LOADING (Redis loading
            # its data after a restart), which redis-py raises as a
            # ConnectionError, not to be taken for a reply that never came.
            raise self._failures.unavailable(exc, wait) from None
        except (TimeoutError, rex.RedisError, OSError) as exc:
            del self.tokens[connection]
            cause = self._failures.unavailable(exc, wait)
            raise Unsettled(token, seq, sent, deadline, careful, cause) from None
        self._redis_clock.observe(reply[1], reply[2], sent, time.monotonic())
        if reply[0] == 0:
            raise StoreUnavailable(
                f"Redis at {self._failures.where} was too busy to start the write within "
                f"{self._timeout * START_SHARE:g} s"
            )
        return reply


def resolve(future: asyncio.Future[int | None], outcome: Outcome) -> None:
    """Answer one request with its outcome."""
    if future.done():
        return  # its request was cancelled
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def refusals_of(batch: list[Request], flat: Sequence[Any], limits: Limits) -> list[Outcome]:
    """The outcome of each request of ``batch``, from add_carefully.lua's list of the
    requests not applied."""
    outcomes: list[Outcome] = [None] * len(batch)
    for i in range(0, len(flat), 4):
        g, e, host, score = (_text(x) for x in flat[i : i + 4])
        request = batch[int(g) - 1]
        if e == "0":  # for its idempotency key
            outcomes[int(g) - 1] = _key_outcome(host, score, limits)
            continue
        size, start, _ = request.adds[int(e) - 1]
        if score == "-1":
            outcomes[int(g) - 1] = _crowded(request.events, size, start, host, limits.max_tracked)
        else:
            outcomes[int(g) - 1] = _overflow(request.events, size, start, host, count(score))
    return outcomes


def _key_outcome(kind: str, value: str, limits: Limits) -> Outcome:
    if kind == "replay":
        return int(value)
    if kind == "conflict":
        return KeyConflict()
    if kind == "flight":
        return KeyInFlight()
    if kind == "full":
        return KeysFull(limits.max_keys, limits.ttl)
    raise AssertionError(f"unknown key outcome {kind!r}")  # pragma: no cover


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _overflow(events: Sequence[Event], size: int, start: int, host: str, score: int) -> EventError:
    """The error for ``host`` overflowing window ``start``, which held ``score``: named
    with the first event whose count pushes its running total past the cap."""
    running = score
    for i, (ts, counts) in enumerate(events):
        if floor(ts, size) == start:
            running += counts.get(host, 0)
            if running > MAX_COUNT:
                return total_too_large(host, i)
    return total_too_large(host, 0)  # pragma: no cover - the script saw the total pass


def _crowded(events: Sequence[Event], size: int, start: int, host: str, limit: int) -> EventError:
    """The error for ``host`` being one host too many for window ``start``: named with
    the first event that brings it there (a count of 0 brings nothing)."""
    for i, (ts, counts) in enumerate(events):
        if floor(ts, size) == start and counts.get(host):
            return too_many_tracked(size, host, limit, i)
    return too_many_tracked(size, host, limit, 0)  # pragma: no cover - the script saw it come


def count(score: bytes | str) -> int:
    """A score as Redis writes it ("42", or "4.2e+16" for large ones) as an exact int."""
    try:
        return int(score)
    except ValueError:
        return int(float(score))
