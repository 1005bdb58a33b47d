"""The Redis store: the :class:`~tophosts.store.Store` protocol over one sorted
set per window (:mod:`tophosts.store.redis.keys`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from tophosts.events import Event
from tophosts.idempotency import Keyed, KeyInFlight
from tophosts.store import (
    AT_ONCE_HOSTS,
    Added,
    Clock,
    Sizes,
    StoreUnavailable,
    TopHosts,
    by_window,
    by_window_in_slices,
    host_totals_in_steps,
    refuse_future_in_steps,
)
from tophosts.store.redis.clock import RedisClock
from tophosts.store.redis.commit import Add, GroupCommit, KeyInfo, Limits
from tophosts.store.redis.connection import Failures, Link, open_link
from tophosts.store.redis.history import RedisHistory, ranked
from tophosts.store.redis.keys import Keys
from tophosts.store.redis.settle import Settler
from tophosts.windows import (
    HOUR,
    MINUTE,
    Window,
    floors,
    hour_of,
    minute_of,
    past,
    settled_after,
    starts,
)


class RedisStore:
    kind = "redis"
    # Redis keeps its own data and answers over the network: neither capability.
    sync = None
    snapshots = None

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = time.time,
        max_skew: int = 300,
        prefix: str = "tophosts",
        timeout: float = 1.0,
        max_tracked_hosts: int = 1_000_000,
        idempotency_ttl: int | None = None,
        max_idempotency_keys: int = 1_000_000,
        body_timeout: float = 30.0,
        retention: int = 0,
        history_top: int = 100,
    ) -> None:
        self._url = url
        self._clock = clock
        self._max_skew = max_skew
        self._timeout = timeout
        self.keys = Keys(prefix, retention)
        ttl = settled_after(max_skew) if idempotency_ttl is None else idempotency_ttl
        limits = Limits(max_tracked_hosts, max_idempotency_keys, ttl)
        # Idempotency keys whose requests this instance is handling -> the token of
        # their in-flight mark in Redis, if they have one (claim.lua).
        self._flight: dict[bytes, str | None] = {}
        self._claim_ms = int((body_timeout + timeout) * 1000)
        self._releases: set[asyncio.Task[None]] = set()
        self._failures = Failures(url, timeout)
        # Created in the event loop that first uses the store: the app's
        # lifespan loop under uvicorn, the portal thread's under TestClient.
        self._link: Link | None = None
        self._redis_clock = RedisClock()
        self._settler = Settler(self.keys, self._failures, self._redis_clock, limits, self._connect)
        self._commit = GroupCommit(
            self.keys,
            self._failures,
            clock,
            self._redis_clock,
            limits,
            self._connect,
            self._settler.prepare,
            self._settler.start,
        )
        self.history: RedisHistory | None = None
        if retention:
            self.history = RedisHistory(
                self.keys, self._failures, clock, self._connect, retention, history_top
            )

    # -- the protocol ---------------------------------------------------------

    async def add(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        now = self._clock()
        await refuse_future_in_steps(events, now, self._max_skew)
        minute_floor, hour_floor = floors(now)

        adds: list[Add]
        if len(events) == 1:
            ts, counts = events[0]
            expired = 0
            if ts < hour_floor:
                if key is None:
                    return Added(0, 1)
                adds, expired, summed = [], 1, 0
            else:
                if 0 in counts.values():
                    counts = {host: n for host, n in counts.items() if n}
                summed = sum(counts.values())
                adds = []
                if counts:
                    adds.append((HOUR, hour_of(ts), counts))
                    if ts >= minute_floor:
                        adds.append((MINUTE, minute_of(ts), counts))
                elif key is None:
                    return Added(1, 0)
        else:
            # Pre-aggregated per window (without zero counts), in the order
            # both stores check them, so that a refusal names the same window,
            # host and event as the memory store's.
            totals = await host_totals_in_steps(events)
            if not totals or totals[-1] <= AT_ONCE_HOSTS:  # none: an empty batch
                merged, expired = by_window(events, hour_floor, minute_floor)
            else:
                await asyncio.sleep(0)  # the totals took a step (2.6 ms at 56,000 events)
                merged, expired = await by_window_in_slices(
                    events, totals, hour_floor, minute_floor
                )
            adds = [(size, start, acc) for (size, start), acc in merged.items() if acc]
            summed = sum(sum(acc.values()) for size, _, acc in adds if size == HOUR)
        if key is not None:
            # Even with nothing to add: the key's outcome is kept (and looked up) in Redis.
            digest, fingerprint = key
            info = KeyInfo(
                self.keys.key(digest),
                digest.hex(),
                str(fingerprint),
                str(expired),
                self._flight.get(digest) or "",
            )
            kept = await self._commit.commit(adds, events, info)
            if kept is not None:
                return Added(len(events) - kept, kept, 0, True)
        elif adds:
            await self._commit.commit(adds, events)
        return Added(len(events) - expired, expired, summed)

    def begin(self, digest: bytes) -> None:
        if digest in self._flight:
            raise KeyInFlight
        self._flight[digest] = None

    async def claim(self, digest: bytes) -> None:
        link = self._connect()
        token = f"{self._commit.instance}.f{next(self._commit.serial)}"
        args: list[str | int] = [token, self._claim_ms, int(self._clock())]
        call = link.claim(keys=[self.keys.key(digest)], args=args, client=link.client)
        if await self._failures.call(call) == 0:
            raise KeyInFlight
        self._flight[digest] = token

    def end(self, digest: bytes) -> None:
        token = self._flight.pop(digest, None)
        if token is not None:
            # Its mark, unless the write replaced it with the key's record.
            task = asyncio.get_running_loop().create_task(self._release(digest, token))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, digest: bytes, token: str) -> None:
        link = self._connect()
        call = link.release(keys=[self.keys.key(digest)], args=[token], client=link.client)
        with contextlib.suppress(StoreUnavailable):  # then the mark goes by itself
            await self._failures.call(call)

    async def top(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        link = self._connect()
        start = past(self._clock() if now is None else now, window).start
        key = self.keys.window(window.value, start)
        call = link.top(keys=[key], args=[limit, 1], client=link.client)
        return ranked((await self._failures.call(call))[0])

    async def sizes(self) -> Sizes:
        client = self._connect().client
        now = self._clock()
        horizon = now + self._max_skew
        minute_floor, hour_floor = floors(now)
        minutes = starts(MINUTE, minute_floor, horizon)
        hours = starts(HOUR, hour_floor, horizon)
        pipe = client.pipeline(transaction=False)
        for start in minutes:
            pipe.zcard(self.keys.window(MINUTE, start))
        for start in hours:
            pipe.zcard(self.keys.window(HOUR, start))
        pipe.zcount(self.keys.index, f"({int(now)}", "+inf")
        *cards, keys = await self._failures.call(pipe.execute())
        return Sizes(
            minute_hosts=sum(cards[: len(minutes)]),
            hour_hosts=sum(cards[len(minutes) :]),
            windows=sum(1 for n in cards if n),
            keys=keys,
        )

    async def ping(self) -> None:
        await self._failures.call(self._connect().client.ping())

    async def close(self) -> None:
        link = self._link
        if link is None:
            return
        if link.loop is asyncio.get_running_loop():
            # Let the calls in flight finish or settle (they are bounded by the timeout).
            pending = {*self._commit.flushers, *self._settler.tasks, *self._releases}
            if pending:
                await asyncio.wait(pending, timeout=self._timeout * 3)
            self._commit.fail_queue(StoreUnavailable("the store is closing"))
            # This instance's write tokens: nothing will settle on them any more.
            await self._settler.forget_retired(link, list(self._commit.tokens.values()))
            await link.client.aclose()
        # else: nothing of another loop can be awaited here.
        self._link = None
        self._commit.reset()
        self._settler.reset()
        self._releases = set()

    # -- connection -----------------------------------------------------------

    def _connect(self) -> Link:
        """The link of the running event loop (a new one, and fresh state, for a new loop)."""
        link = self._link
        if link is None or link.loop is not asyncio.get_running_loop():
            link = self._link = open_link(self._url, self._timeout)
            self._commit.reset()
            self._settler.reset()
            self._redis_clock.reset()
        return link
