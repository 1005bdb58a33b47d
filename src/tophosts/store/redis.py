"""The shared store: one Redis (or Valkey) sorted set per window.

Any number of tophosts processes can share one Redis and give the same answers
as the memory store (:mod:`tophosts.store.memory`, the reference semantics).

Layout
    ``<prefix>:m:<minute_start>`` and ``<prefix>:h:<hour_start>``: member = host,
    score = its count in that window. A window is asked about during the window
    after it, so a minute key expires 120 s after its start and an hour key
    7200 s after its start. Each write sets that TTL relative to the app clock
    (PEXPIRE), so Redis drops a key as soon as no query can reach it.

Ingest
    One Lua script applies a whole event or batch atomically in one round trip.
    Concurrent requests are coalesced (a group commit): while one script call
    is in flight, the events that arrive queue up and go together in the next
    call. The script applies each request's events all-or-nothing, on its own,
    in arrival order, so one request's refusal never touches another's; each
    request is answered only once its own events are applied.

Exactness
    Scores are doubles: integers are exact up to 2**53 - 1, which is why counts
    are capped there. The script refuses a request that would take a total
    past the cap before adding anything of it, so nothing ever silently loses
    precision. Counts travel as decimal strings, never as Lua numbers.

Failure
    Every call is bounded by ``timeout``; a down, unreachable or slow Redis
    raises :class:`StoreUnavailable` (the app answers 503 + Retry-After). A 503
    must mean nothing was applied, so the ingest script carries a deadline on
    the Redis clock: a call that Redis only gets to after the client may have
    given up changes nothing. A call that was sent and got no reply is settled
    before it is answered (see _SETTLE): applied, not applied (503), or, if
    Redis does not say within another timeout, unknown (WriteUncertain, a
    504); settling only reads, so it is asked again when its own reply is
    lost. An error reply, -LOADING included, means nothing ran: 503. No write
    is retried behind the caller's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.maint_notifications import MaintNotificationsConfig

from tophosts.events import (
    MAX_COUNT,
    Event,
    EventError,
    too_far_ahead,
    too_many_tracked,
    total_too_large,
)
from tophosts.store import (
    Added,
    Clock,
    Counts,
    Sizes,
    StoreUnavailable,
    TopHosts,
    WriteUncertain,
    by_window,
    merge,
)
from tophosts.windows import HOUR, MINUTE, Window, past

log = logging.getLogger("tophosts.store")

Add = tuple[int, int, Counts]
"""``(window size, window start, {host: count})``: what one request adds to one window."""

# Share of the timeout within which Redis must *start* an ingest call. The rest
# of the timeout is margin for the reply to come back, so that a call that ran
# is (all but) never reported as failed.
_START_SHARE = 0.5
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
_POOL_SIZE = 32

# Both ingest scripts take
#   KEYS: the window keys of this call, then the writes hash (see _SETTLE);
#   ARGV[1]: the deadline to start by, on the Redis clock, in microseconds;
#   ARGV[2]: msgpack of {ttls, ...}: the TTL in ms of each key, then as below;
#   ARGV[3], ARGV[4]: the write's token and sequence number.
# Counts and sums are decimal strings: a Lua number would print large ones
# inexactly. Doubles round monotonically, so "a + b > MAX" is decided exactly
# even when a or b is past 2^53.
# Both reply {status, sec, usec, ...}, where sec, usec is the Redis clock at
# the start and status is 0 when Redis started too late (nothing written).
_CHECK_KEYS = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) > tonumber(ARGV[1]) then
  return {0, now[1], now[2]}
end
local MAX = 9007199254740991
local data = cmsgpack.unpack(ARGV[2])
local WRITES, n = KEYS[#KEYS], #KEYS - 1
local highest = {}
for i = 1, n do
  local top = redis.pcall('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if top['err'] then
    return redis.error_reply(top['err'] .. ' (' .. KEYS[i] ..
      '): is another application using the same --redis-prefix?')
  end
  highest[i] = top[2] and tonumber(top[2]) or 0
end
"""

# ARGV[2] = {ttls, adding, counts}: per key, the sum of what this call adds and
# {host, count, host, count, ...} merged over all the call's requests. A host
# can only pass MAX in a key if the key's highest score plus all the call adds
# to it does: then nothing is written and the reply is {2, sec, usec}, for the
# client to send the same requests to _ADD_CAREFULLY. Else {1, sec, usec}.
_ADD = (
    _CHECK_KEYS
    + """
local ttls, adding, counts, cap = data[1], data[2], data[3], tonumber(data[4])
for i = 1, n do
  if highest[i] + tonumber(adding[i]) > MAX or
      redis.call('ZCARD', KEYS[i]) + #counts[i] / 2 > cap then
    return {2, now[1], now[2]}
  end
end
for i = 1, n do
  local key, pairs = KEYS[i], counts[i]
  for j = 1, #pairs, 2 do
    redis.call('ZINCRBY', key, pairs[j + 1], pairs[j])
  end
  redis.call('PEXPIRE', key, ttls[i])
end
redis.call('HSET', WRITES, ARGV[3], ARGV[4] .. ':' .. now[1])
return {1, now[1], now[2]}
"""
)

# ARGV[2] = {ttls, groups}: one group per request, a list of entries
# {key index, host, count, host, count, ...}. Each group is checked host by
# host and applied whole, or refused whole, in order. Reply: {1, sec, usec,
# refusals}, the refusals being {group, entry, host, that host's score, ...}.
_ADD_CAREFULLY = (
    _CHECK_KEYS
    + """
local ttls, groups, cap = data[1], data[2], tonumber(data[3])
local cards = {}
for i = 1, n do
  cards[i] = redis.call('ZCARD', KEYS[i])
end
local refusals = {}
for g = 1, #groups do
  local group = groups[g]
  -- A group is refused whole, for the first of its hosts (windows in the
  -- order its events name them, hosts in the order they appear) that would
  -- take its window total past MAX; else for the first new host that would
  -- take its window past --max-tracked-hosts (score '-1'). An overflow
  -- anywhere in the group comes before the cap: the memory store's order.
  local refusal = nil
  for e = 1, #group do
    local entry = group[e]
    local key = KEYS[entry[1]]
    for j = 2, #entry, 2 do
      local score = redis.call('ZSCORE', key, entry[j])
      if (score and tonumber(score) or 0) + tonumber(entry[j + 1]) > MAX then
        refusal = {g, e, entry[j], score or '0'}
        break
      end
    end
    if refusal then
      break
    end
  end
  local fresh = {}
  if not refusal then
    for e = 1, #group do
      local entry = group[e]
      local i = entry[1]
      local n = fresh[i] or 0
      for j = 2, #entry, 2 do
        if not redis.call('ZSCORE', KEYS[i], entry[j]) then
          n = n + 1
          if cards[i] + n > cap then
            refusal = {g, e, entry[j], '-1'}
            break
          end
        end
      end
      fresh[i] = n
      if refusal then
        break
      end
    end
  end
  if refusal then
    for k = 1, 4 do
      refusals[#refusals + 1] = refusal[k]
    end
  else
    for e = 1, #group do
      local entry = group[e]
      local key = KEYS[entry[1]]
      for j = 2, #entry, 2 do
        redis.call('ZINCRBY', key, entry[j + 1], entry[j])
      end
    end
    for i, more in pairs(fresh) do
      cards[i] = cards[i] + more
    end
  end
end
for i = 1, n do
  redis.call('PEXPIRE', KEYS[i], ttls[i])
end
redis.call('HSET', WRITES, ARGV[3], ARGV[4] .. ':' .. now[1] .. ':' .. cmsgpack.pack(refusals))
return {1, now[1], now[2], refusals}
"""
)

# KEYS[1]: the window. ARGV[1]: the limit. Reply: {above, tied, cutoff}: the
# members above the cut-off score with their scores, and the members that tie
# at it, smallest names first, as many as fit; or {all, {}} when fewer than the
# limit have a positive score.
_TOP = """
local limit = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], '+inf', '(0', 'BYSCORE', 'REV',
  'LIMIT', 0, limit, 'WITHSCORES')
if #top < 2 * limit then
  return {top, {}}
end
local cutoff = top[#top]
local keep = #top
while keep > 0 and top[keep] == cutoff do
  keep = keep - 2
end
local above = {}
for i = 1, keep do
  above[i] = top[i]
end
local tied = redis.call('ZRANGE', KEYS[1], cutoff, cutoff, 'BYSCORE',
  'LIMIT', 0, limit - keep / 2)
return {above, tied, cutoff}
"""

# Settling a write whose reply never came (a timeout, a dropped connection).
# Every ingest call carries a token and a sequence number; when a call applies,
# it records "<seq>:<sec>[:<refusals>]" under its token in the writes hash,
# ``<prefix>:writes``. A token is used by one connection, one call at a time,
# and is retired when a call on it fails, so after the call's start deadline
# (when it can no longer start) its field says for good whether it applied.
# The script only reads, so it gives the same answer however often it is
# asked: a settle whose own reply is lost is simply asked again. The instance
# deletes the field once it has the answer (and at close(); the sweep takes
# those of crashed instances).
# KEYS[1]: the writes hash. ARGV: token, seq, the call's start deadline (us).
# Reply: {0} before the deadline; else {1, field} if the call applied, {2} if
# it did not (and never will).
_SETTLE = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) <= tonumber(ARGV[3]) then
  return {0}
end
local field = redis.call('HGET', KEYS[1], ARGV[1])
if field and string.sub(field, 1, #ARGV[2] + 1) == ARGV[2] .. ':' then
  return {1, field}
end
return {2}
"""

# KEYS[1]: the writes hash. ARGV[1]: an age in seconds. Deletes the fields of
# tokens that have not applied a write for that long (those of stopped or
# crashed instances: nothing can settle on them any more). Reply: how many.
_SWEEP = """
local oldest = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local gone = 0
for i = 1, #all, 2 do
  local sec = tonumber(string.match(all[i + 1], '^%d+:(%d+)'))
  if not sec or sec < oldest then
    redis.call('HDEL', KEYS[1], all[i])
    gone = gone + 1
  end
end
return gone
"""
# Tokens older than this are swept when an instance (re)connects.
_SWEEP_AGE = 600
# Share of the timeout one settle call may take: one that gets no reply in
# that time is asked again, on another connection, within the same timeout.
_SETTLE_SHARE = 0.5
# Most retired tokens an instance keeps to delete later (after a failed delete);
# any more are left to the sweep.
_RETIRED_MAX = 10_000

_msgpack = msgspec.msgpack.Encoder().encode


class _Conn(NamedTuple):
    """The client of one event loop, and the scripts registered on it."""

    loop: asyncio.AbstractEventLoop
    pool: BlockingConnectionPool
    client: aioredis.Redis
    add: AsyncScript
    add_carefully: AsyncScript
    top: AsyncScript
    settle: AsyncScript
    sweep: AsyncScript


class _Request:
    """One request's adds, waiting for (or riding in) a script call."""

    __slots__ = ("adds", "events", "future", "ops")

    def __init__(self, adds: list[Add], events: Sequence[Event], future: asyncio.Future[None]):
        self.adds = adds
        self.events = events
        self.future = future
        self.ops = sum(len(counts) for _, _, counts in adds)


class _Unsettled(Exception):
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
        self.careful = careful  # _ADD_CAREFULLY: its refusals are in the writes hash
        self.cause = cause


class RedisStore:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = time.time,
        max_skew: int = 300,
        prefix: str = "tophosts",
        timeout: float = 1.0,
        max_tracked_hosts: int = 1_000_000,
    ) -> None:
        self._url = url
        self._max_tracked = max_tracked_hosts
        self._where = describe(url)
        self._clock = clock
        self._max_skew = max_skew
        self._prefix = prefix
        self._timeout = timeout
        # Created in the event loop that first uses the store: the app's
        # lifespan loop under uvicorn, the portal thread's under TestClient.
        self._conn: _Conn | None = None
        self._queue: list[_Request] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._settlers: set[asyncio.Task[None]] = set()
        # Bounds on (Redis clock - time.monotonic()), from the replies.
        self._offset: tuple[float, float] | None = None
        # Write tokens: one per connection, until a call on it fails.
        self._writes = f"{prefix}:writes"
        self._instance = os.urandom(6).hex()
        self._serial = itertools.count(1)
        self._tokens: weakref.WeakKeyDictionary[AbstractConnection, str] = (
            weakref.WeakKeyDictionary()
        )
        # Tokens retired after a failed call, whose field is still to be deleted.
        self._retired: set[str] = set()

    # Redis keeps its own data and answers over the network: neither capability.
    sync = None
    snapshots = None

    def key(self, window: Window | int, start: int) -> str:
        """The sorted set holding window ``start`` of size ``window``."""
        size = window.value if isinstance(window, Window) else window
        return f"{self._prefix}:{'m' if size == MINUTE else 'h'}:{start}"

    # -- the protocol ---------------------------------------------------------

    async def add(self, events: Sequence[Event]) -> Added:
        now = self._clock()
        horizon = now + self._max_skew
        single = len(events) == 1
        for i, (ts, _) in enumerate(events):
            if ts > horizon:
                raise too_far_ahead(ts, now, self._max_skew, i)
        # The starts of the past hour and minute (windows.past, inlined).
        hour_floor = int(now // HOUR) * HOUR - HOUR
        minute_floor = int(now // MINUTE) * MINUTE - MINUTE

        adds: list[Add]
        if single:
            ts, counts = events[0]
            if ts < hour_floor:
                return Added(0, 1)
            expired = 0
            if 0 in counts.values():
                counts = {host: n for host, n in counts.items() if n}
                if not counts:
                    return Added(1, 0)
            host_counts = sum(counts.values())
            adds = [(HOUR, ts - ts % HOUR, counts)]
            if ts >= minute_floor:
                adds.append((MINUTE, ts - ts % MINUTE, counts))
        else:
            # Pre-aggregated per window (without zero counts), in the order
            # both stores check them, so that a refusal names the same window,
            # host and event as the memory store's.
            merged, expired = by_window(events, hour_floor, minute_floor)
            adds = [(size, start, acc) for (size, start), acc in merged.items() if acc]
            host_counts = sum(sum(acc.values()) for size, _, acc in adds if size == HOUR)
        if adds:
            await self._commit(adds, events)
        return Added(len(events) - expired, expired, host_counts)

    async def top(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        conn = self._connect()
        key = self.key(window, past(self._clock() if now is None else now, window).start)
        reply = await self._call(conn.top(keys=[key], args=[limit], client=conn.client))
        above = reply[0]
        ranked = [(above[i].decode(), _count(above[i + 1])) for i in range(0, len(above), 2)]
        ranked.sort(key=_rank)
        if len(reply) > 2:
            cutoff = _count(reply[2])
            ranked.extend((host.decode(), cutoff) for host in reply[1])
        return ranked

    async def sizes(self) -> Sizes:
        client = self._connect().client
        now = self._clock()
        horizon = now + self._max_skew
        minutes = range(past(now, Window.MINUTE).start, int(horizon) + 1, MINUTE)
        hours = range(past(now, Window.HOUR).start, int(horizon) + 1, HOUR)
        pipe = client.pipeline(transaction=False)
        for start in minutes:
            pipe.zcard(self.key(MINUTE, start))
        for start in hours:
            pipe.zcard(self.key(HOUR, start))
        cards: list[int] = await self._call(pipe.execute())
        return Sizes(
            minute_hosts=sum(cards[: len(minutes)]),
            hour_hosts=sum(cards[len(minutes) :]),
            windows=sum(1 for n in cards if n),
        )

    async def ping(self) -> None:
        await self._call(self._connect().client.ping())

    async def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if conn.loop is asyncio.get_running_loop():
            # Let the calls in flight finish or settle (they are bounded by the timeout).
            if self._flushers or self._settlers:
                await asyncio.wait({*self._flushers, *self._settlers}, timeout=self._timeout * 3)
            self._fail_queue(StoreUnavailable("the store is closing"))
            # This instance's write tokens: nothing will settle on them any more.
            tokens = [*self._tokens.values(), *self._retired]
            if tokens:
                with contextlib.suppress(StoreUnavailable):
                    await self._call(conn.client.hdel(self._writes, *tokens))
            await conn.client.aclose()
        # else: nothing of another loop can be awaited here.
        self._conn = None
        self._flushers = set()
        self._settlers = set()

    # -- connection -----------------------------------------------------------

    def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or conn.loop is not loop:
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=_POOL_SIZE,
                timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # Every call is bounded by _call() instead: one timer, not two.
                socket_timeout=None,
                # A retry could apply an event twice; the caller retries on 503.
                retry=Retry(NoBackoff(), 0),
                # Enabled (or "auto", redis-py's default), these make the pool
                # skip its check that a connection was not closed by Redis.
                maint_notifications_config=MaintNotificationsConfig(enabled=False),
            )
            client = aioredis.Redis.from_pool(pool)
            conn = self._conn = _Conn(
                loop,
                pool,
                client,
                client.register_script(_ADD),
                client.register_script(_ADD_CAREFULLY),
                client.register_script(_TOP),
                client.register_script(_SETTLE),
                client.register_script(_SWEEP),
            )
            self._queue = []
            self._flushers = set()
            self._settlers = set()
            self._offset = None
        return conn

    async def _call(self, call: Any, wait: float | None = None) -> Any:
        """Await a Redis call within the timeout, mapping every failure to StoreUnavailable."""
        wait = self._timeout if wait is None else wait
        try:
            async with asyncio.timeout(wait):
                return await call
        except (TimeoutError, rex.RedisError, OSError) as exc:
            raise self._unavailable(exc, wait) from None

    def _unavailable(self, exc: BaseException, wait: float) -> StoreUnavailable:
        if isinstance(exc, rex.BusyLoadingError):
            return StoreUnavailable(
                f"Redis at {self._where} is loading its data into memory (after a restart) "
                "and answers nothing else until it is done"
            )
        if isinstance(exc, TimeoutError | rex.TimeoutError):
            return StoreUnavailable(f"Redis at {self._where} did not answer within {wait:.3g} s")
        if isinstance(exc, rex.ConnectionError | OSError):
            return StoreUnavailable(f"cannot reach Redis at {self._where}: {exc}")
        return StoreUnavailable(f"Redis at {self._where} failed: {exc}")

    # -- ingest: group commit -------------------------------------------------

    async def _commit(self, adds: list[Add], events: Sequence[Event]) -> None:
        self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Request(adds, events, future))
        if len(self._flushers) < _IN_FLIGHT:
            task = loop.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        await future

    async def _flush(self) -> None:
        conn = self._connect()
        # A flusher keeps one connection while there is work: going through
        # the client's execute_command and pool for every call costs about
        # as much CPU again as the call itself.
        connection: AbstractConnection | None = None
        batch: list[_Request] = []
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
                        connection = await self._call(conn.pool.get_connection())  # type: ignore[no-untyped-call]
                    refusals = await self._apply(batch, conn, connection)
                except StoreUnavailable as exc:
                    # What queued meanwhile would most likely fail too: do not
                    # make it wait another timeout. Nothing was applied.
                    for request in batch:
                        _settle(request.future, StoreUnavailable(str(exc)))
                    self._fail_queue(exc)
                    continue
                except _Unsettled as unsettled:
                    # Sent, but no reply: learn whether it applied before answering.
                    self._fail_queue(unsettled.cause)
                    task = asyncio.get_running_loop().create_task(self._settle(batch, unsettled))
                    self._settlers.add(task)
                    task.add_done_callback(self._settlers.discard)
                    batch = []
                    continue
                for request, refusal in zip(batch, refusals, strict=True):
                    _settle(request.future, refusal)
        except Exception as exc:
            # A bug: fail the requests with it (a 500) rather than leave them hanging.
            for request in (*batch, *self._queue):
                _settle(request.future, exc)
            self._queue = []
        except BaseException:
            self._fail_queue(StoreUnavailable("the store is shutting down"), batch)
            raise
        finally:
            # Give up the slot before anything else is awaited: a request that
            # queues from now on must find room to start a flusher of its own.
            self._flushers.discard(asyncio.current_task())
            if connection is not None:
                await conn.pool.release(connection)

    def _take(self) -> list[_Request]:
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

    def _fail_queue(self, exc: StoreUnavailable, also: Sequence[_Request] = ()) -> None:
        queue, self._queue = self._queue, []
        for request in (*also, *queue):
            _settle(request.future, StoreUnavailable(str(exc)))

    async def _apply(
        self, batch: list[_Request], conn: _Conn, connection: AbstractConnection
    ) -> list[EventError | None]:
        """Run one ingest script call for ``batch``; one refusal (or None) per request."""
        if self._offset is None:
            await self._calibrate(conn.client)

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
        keys = [*(self.key(size, start) for size, start in merged), self._writes]
        # The window can turn between add() and here: a TTL is never below 1 ms.
        ttls = [max(1, math.ceil((start + 2 * size - now) * 1000)) for size, start in merged]
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
        reply = await self._run(conn.add, connection, keys, data, ops)
        if reply[0] == 1:
            return [None] * len(batch)

        # Some total would come near 2^53 - 1: check request by request.
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
        reply = await self._run(conn.add_carefully, connection, keys, careful, ops * 2, True)
        return self._refusals(batch, reply[3])

    def _refusals(self, batch: list[_Request], flat: Sequence[Any]) -> list[EventError | None]:
        """The refusal of each request of ``batch``, from _ADD_CAREFULLY's list of them."""
        refusals: list[EventError | None] = [None] * len(batch)
        for i in range(0, len(flat), 4):
            g, e, host, score = (_text(x) for x in flat[i : i + 4])
            request = batch[int(g) - 1]
            size, start, _ = request.adds[int(e) - 1]
            if score == "-1":
                refusals[int(g) - 1] = _crowded(
                    request.events, size, start, host, self._max_tracked
                )
            else:
                refusals[int(g) - 1] = _overflow(request.events, size, start, host, _count(score))
        return refusals

    async def _run(
        self,
        script: AsyncScript,
        connection: AbstractConnection,
        keys: list[str],
        data: tuple[Any, ...],
        ops: int,
        careful: bool = False,
    ) -> Any:
        """One ingest script call, with the deadline to start by.

        Raises StoreUnavailable when nothing was applied: Redis could not be
        reached, refused the call, or got to it too late. Raises _Unsettled
        when the call was sent and no reply came in time: it may have applied.
        """
        assert self._offset is not None
        if not connection.is_connected:
            await self._call(connection.connect())  # type: ignore[no-untyped-call]
        token = self._tokens.get(connection)
        if token is None:
            token = self._tokens[connection] = f"{self._instance}.{next(self._serial)}"
        seq = next(self._serial)
        payload = _msgpack(data)
        wait = self._timeout + ops * _WAIT_PER_OP
        sent = time.monotonic()
        deadline = int((sent + self._timeout * _START_SHARE + self._offset[0]) * 1e6)
        try:
            async with asyncio.timeout(wait):
                reply = await _evalsha(
                    connection, script, [*keys, deadline, payload, token, seq], len(keys)
                )
        except (rex.ResponseError, rex.BusyLoadingError) as exc:
            # An error reply: nothing ran. That includes -LOADING (Redis loading
            # its data after a restart), which redis-py raises as a
            # ConnectionError, not to be taken for a reply that never came.
            raise self._unavailable(exc, wait) from None
        except (TimeoutError, rex.RedisError, OSError) as exc:
            del self._tokens[connection]
            cause = self._unavailable(exc, wait)
            raise _Unsettled(token, seq, sent, deadline, careful, cause) from None
        self._observe(reply[1], reply[2], sent, time.monotonic())
        if reply[0] == 0:
            raise StoreUnavailable(
                f"Redis at {self._where} was too busy to start the write within "
                f"{self._timeout * _START_SHARE:g} s"
            )
        return reply

    async def _settle(self, batch: list[_Request], unsettled: _Unsettled) -> None:
        """Answer the requests of a call that got no reply, once Redis says whether it
        applied: as applied, as refused (503), or, if Redis does not say within the
        timeout, as uncertain (504)."""
        conn = self._connect()
        # Past the call's deadline (see _run) it can no longer start, and the
        # settle script can tell for good. Roughly then on this clock:
        start_by = unsettled.sent + self._timeout * _START_SHARE
        # One timeout from then on (or from now, if later) for Redis to say.
        give_up = max(time.monotonic(), start_by) + self._timeout
        outcome: list[EventError | None] | BaseException | None = None
        args: list[str | int] = [unsettled.token, unsettled.seq, unsettled.deadline]
        while outcome is None and (left := give_up - time.monotonic()) > 0:
            if (early := start_by - time.monotonic()) > 0:
                await asyncio.sleep(min(early, left))
                continue
            try:
                # At most a share of the time: a settle whose reply is lost or
                # late is asked again (on another connection), for the same answer.
                reply = await self._call(
                    conn.settle(keys=[self._writes], args=args, client=conn.client),
                    min(left, self._timeout * _SETTLE_SHARE),
                )
            except StoreUnavailable:
                await asyncio.sleep(min(0.05, max(0.0, give_up - time.monotonic())))
                continue
            if reply[0] == 0:  # the clocks disagree by a hair: the deadline is near
                await asyncio.sleep(0.005)
            elif reply[0] == 2:
                outcome = unsettled.cause
            elif unsettled.careful:
                packed = bytes(reply[1]).split(b":", 2)[2]
                outcome = self._refusals(batch, msgspec.msgpack.decode(packed))
            else:
                outcome = [None] * len(batch)
        if outcome is None:
            log.warning("a write got no reply; its outcome is unknown: %s", unsettled.cause)
            outcome = WriteUncertain(
                f"{unsettled.cause}, and it could not be learned in time whether the events "
                "were applied: they may or may not have been counted"
            )
        else:
            log.warning(
                "a write got no reply; Redis says it was %s: %s",
                "not applied" if isinstance(outcome, BaseException) else "applied",
                unsettled.cause,
            )
        for i, request in enumerate(batch):
            if isinstance(outcome, BaseException):
                _settle(request.future, _copy(outcome))
            else:
                _settle(request.future, outcome[i])
        # Answered: now the token's field can go (it may hold the write's record).
        if len(self._retired) < _RETIRED_MAX:
            self._retired.add(unsettled.token)
        if not isinstance(outcome, WriteUncertain):
            await self._forget_retired(conn)

    async def _forget_retired(self, conn: _Conn) -> None:
        """Delete the fields of retired tokens (those whose calls are settled)."""
        tokens = list(self._retired)
        if tokens:
            with contextlib.suppress(StoreUnavailable):
                await self._call(conn.client.hdel(self._writes, *tokens))
                self._retired.difference_update(tokens)

    async def _calibrate(self, client: aioredis.Redis) -> None:
        sent = time.monotonic()
        sec, usec = await self._call(client.time())
        self._observe(sec, usec, sent, time.monotonic())
        conn = self._connect()
        await self._call(conn.sweep(keys=[self._writes], args=[_SWEEP_AGE], client=client))

    def _observe(self, sec: int | bytes, usec: int | bytes, sent: float, received: float) -> None:
        """Narrow the bounds on the Redis clock's offset with one reading taken in between."""
        redis_now = int(sec) + int(usec) / 1e6
        low, high = redis_now - received, redis_now - sent
        if self._offset is not None:
            old_low, old_high = self._offset
            if low <= old_high and old_low <= high:
                low, high = max(low, old_low), min(high, old_high)
            # else: a clock stepped; start again from this reading.
        self._offset = (low, high)


async def _evalsha(
    connection: AbstractConnection, script: AsyncScript, args: list[Any], keys: int
) -> Any:
    """EVALSHA on ``connection``, loading the script first if Redis does not have it
    (after a restart, say): NOSCRIPT means nothing ran."""
    try:
        await connection.send_command("EVALSHA", script.sha, keys, *args)
        return await connection.read_response()
    except rex.NoScriptError:
        await connection.send_command("SCRIPT", "LOAD", script.script)
        await connection.read_response()
        await connection.send_command("EVALSHA", script.sha, keys, *args)
        return await connection.read_response()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return  # its request was cancelled
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per request: one raised in many tasks would chain their tracebacks."""
    return type(exc)(str(exc))


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _overflow(events: Sequence[Event], size: int, start: int, host: str, score: int) -> EventError:
    """The error for ``host`` overflowing window ``start``, which held ``score``: named
    with the first event whose count pushes its running total past the cap."""
    running = score
    for i, (ts, counts) in enumerate(events):
        if ts - ts % size == start:
            running += counts.get(host, 0)
            if running > MAX_COUNT:
                return total_too_large(host, i)
    return total_too_large(host, 0)  # pragma: no cover - the script saw the total pass


def _crowded(events: Sequence[Event], size: int, start: int, host: str, limit: int) -> EventError:
    """The error for ``host`` being one host too many for window ``start``: named with
    the first event that brings it there (a count of 0 brings nothing)."""
    for i, (ts, counts) in enumerate(events):
        if ts - ts % size == start and counts.get(host):
            return too_many_tracked(size, host, limit, i)
    return too_many_tracked(size, host, limit, 0)  # pragma: no cover - the script saw it come


def _count(score: bytes | str) -> int:
    """A score as Redis writes it ("42", or "4.2e+16" for large ones) as an exact int."""
    try:
        return int(score)
    except ValueError:
        return int(float(score))


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def describe(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    kwargs: dict[str, Any] = dict(parse_url(url))
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = url.split("://", 1)[0]
    host = kwargs.get("host", "localhost")
    port = kwargs.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"
