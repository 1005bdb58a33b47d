"""History through the Store protocol, for every store (see ``store_url``), on a fake clock.

T0 is 22:13:20: the past minute is [22:12, 22:13), which freezes at 22:14:00.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.clock import T0, FakeClock
from tests.support.servers import RedisServer
from tophosts.store import History, Store, open_store
from tophosts.store.memory import MemoryStore
from tophosts.store.redis import RedisStore
from tophosts.store.redis.keys import LINGER
from tophosts.windows import HOUR, MINUTE, Window, ends, past

pytestmark = pytest.mark.anyio

MakeStore = Callable[..., Store]
PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


def history_of(store: Store) -> History:
    history = store.history
    assert history is not None
    return history


async def test_no_history_without_retention(make_store: MakeStore) -> None:
    assert make_store().history is None
    assert make_store(retention=0).history is None
    history = history_of(make_store(retention=5400, history_top=7))
    assert (history.retention, history.history_top) == (5400, 7)


async def test_a_frozen_window_answers_what_the_past_window_answered_last(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(retention=3600, history_top=3)
    history = history_of(store)
    await store.add([(PAST_MINUTE + 1, {"a": 4, "b": 2}), (PAST_MINUTE + 59, {"c": 3, "a": 1})])
    clock.set(ends(MINUTE, PAST_MINUTE) - 0.001)  # its last moment as the past minute
    last = await store.top(Window.MINUTE, 3)
    assert last == [("a", 5), ("c", 3), ("b", 2)]
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 3) == [last]
    clock.set(ends(MINUTE, PAST_MINUTE))  # it freezes
    assert await store.top(Window.MINUTE, 3) == []  # the next minute is the past one
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 3) == [last]
    await history.freeze()
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 3) == [last]
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 2) == [last[:2]]


async def test_late_events_never_change_a_frozen_window_but_count_in_the_hour(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(retention=3600)
    history = history_of(store)
    await store.add([(PAST_MINUTE, {"a": 2})])
    clock.set(ends(MINUTE, PAST_MINUTE))
    for freeze_first in (True, False):
        if freeze_first:
            await history.freeze()
        # Late: stamped inside the frozen minute, arriving after it froze.
        await store.add([(PAST_MINUTE + 30, {"a": 5, "late": 9})])
        assert await history.closed(Window.MINUTE, [PAST_MINUTE], 10) == [[("a", 2)]]
    await history.freeze()
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 10) == [[("a", 2)]]
    clock.set(T0 - T0 % HOUR + HOUR)  # T0's hour is now the past one: the late events count
    assert await store.top(Window.HOUR, 10) == [("late", 18), ("a", 12)]


async def test_ties_at_the_k_cut_off_go_to_the_smallest_names(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(retention=3600, history_top=3)
    await store.add([(PAST_MINUTE, {"z": 9, "d": 5, "b": 5, "c": 5, "a": 5, "y": 1})])
    # The same counts, the hosts coming in the other order.
    other = make_store(retention=3600, history_top=3, redis_prefix="other")
    for host in ("d", "c", "b", "a", "z"):
        await other.add([(PAST_MINUTE, {host: 9 if host == "z" else 5})])
    clock.set(ends(MINUTE, PAST_MINUTE))
    for history in (history_of(store), history_of(other)):
        await history.freeze()
        assert await history.closed(Window.MINUTE, [PAST_MINUTE], 3) == [
            [("z", 9), ("a", 5), ("b", 5)]
        ]
        assert await history.closed(Window.MINUTE, [PAST_MINUTE], 1) == [[("z", 9)]]


async def test_hours_freeze_at_start_plus_7200_and_ranges_cross_hours(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(retention=86400, history_top=5)
    history = history_of(store)
    hour = PAST_HOUR + HOUR  # T0's own hour
    minutes = [hour - 120, hour - 60, hour, hour + 60]  # across the hour boundary
    clock.set(hour - 120)
    for i, start in enumerate(minutes):
        clock.set(start)
        await store.add([(start, {f"m{i}": i + 1, "all": 10})])
    clock.set(ends(HOUR, hour) - 1)
    assert await store.top(Window.HOUR, 5) == [("all", 20), ("m3", 4), ("m2", 3)]
    clock.set(ends(HOUR, hour))
    await history.freeze()
    assert await history.closed(Window.HOUR, [PAST_HOUR, hour], 5) == [
        [("all", 20), ("m1", 2), ("m0", 1)],
        [("all", 20), ("m3", 4), ("m2", 3)],
    ]
    assert await history.closed(Window.MINUTE, [*minutes, hour + 120], 5) == [
        [("all", 10), (f"m{i}", i + 1)] for i in range(4)
    ] + [[]]


async def test_freezing_twice_changes_nothing(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store(retention=3600, history_top=2)
    history = history_of(store)
    await store.add([(PAST_MINUTE, {"a": 3, "b": 2, "c": 1})])
    clock.set(ends(MINUTE, PAST_MINUTE) + 30)
    await asyncio.gather(history.freeze(), history.freeze())
    await history.freeze()
    assert await history.closed(Window.MINUTE, [PAST_MINUTE], 2) == [[("a", 3), ("b", 2)]]


# -- the memory store ---------------------------------------------------------


async def test_memory_keeps_compact_records_and_drops_them_after_the_retention(
    clock: FakeClock,
) -> None:
    store = MemoryStore(clock=clock, retention=120, history_top=2)
    await store.add([(PAST_MINUTE, {"a": 3, "b": 2, "c": 1}), (PAST_HOUR, {"h": 1})])
    clock.set(ends(MINUTE, PAST_MINUTE))
    await store.freeze()
    assert store.dump_history() == [(MINUTE, PAST_MINUTE, ["a", "b"], [3, 2])]
    clock.set(ends(MINUTE, PAST_MINUTE) + 119)
    await store.freeze()
    # The next minute froze too, without data: no record for it.
    assert store.dump_history() == [(MINUTE, PAST_MINUTE, ["a", "b"], [3, 2])]
    clock.set(ends(MINUTE, PAST_MINUTE) + 120)
    await store.freeze()
    assert store.dump_history() == []
    clock.set(ends(HOUR, PAST_HOUR))
    await store.freeze()
    assert store.dump_history() == [(HOUR, PAST_HOUR, ["h"], [1])]
    clock.set(ends(HOUR, PAST_HOUR) + 120)
    await store.freeze()
    assert store.dump_history() == []


async def test_memory_freezes_a_big_window_across_many_turns_of_the_loop(
    clock: FakeClock,
) -> None:
    store = MemoryStore(clock=clock, retention=3600, history_top=10)
    store.add_now([(PAST_MINUTE, {f"h{i:05}": i for i in range(1, 50_001)})])
    clock.set(ends(MINUTE, PAST_MINUTE))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    await store.freeze()
    counter.cancel()
    assert turns >= 50_000 // 2048
    assert store.dump_history()[0][2] == [f"h{i:05}" for i in range(50_000, 49_990, -1)]


# -- the Redis store ----------------------------------------------------------


async def test_redis_writes_a_frozen_window_once_whoever_comes_first(
    redis_url: str, redis_server: RedisServer, clock: FakeClock
) -> None:
    first = open_store(redis_url, clock=clock, retention=3600, history_top=2)
    second = open_store(redis_url, clock=clock, retention=3600, history_top=4)
    assert isinstance(first, RedisStore)
    try:
        await first.add([(PAST_MINUTE, {"a": 4, "b": 3, "c": 2, "d": 1})])
        live = first.keys.window(MINUTE, PAST_MINUTE)
        frozen = first.keys.frozen(MINUTE, PAST_MINUTE)
        clock.set(ends(MINUTE, PAST_MINUTE) + 5)
        with redis_server.client() as client:
            assert client.exists(live)
            assert not client.exists(frozen)
            await history_of(first).freeze()
            assert client.zrevrange(frozen, 0, -1, withscores=True) == [(b"a", 4.0), (b"b", 3.0)]
            assert not client.exists(live)  # no query can reach it any more
            # The TTL: the retention left, and LINGER more.
            ttl = client.pttl(frozen) / 1000
            assert 3600 - 5 + LINGER - 2 < ttl <= 3600 - 5 + LINGER
            # A second instance with a larger K neither trims nor rewrites it.
            await history_of(second).freeze()
            client.zadd(live, {"z": 100})  # a late write from a lagging instance, say
            await history_of(first).freeze()
            assert client.zrevrange(frozen, 0, -1, withscores=True) == [(b"a", 4.0), (b"b", 3.0)]
        assert await history_of(second).closed(Window.MINUTE, [PAST_MINUTE], 2) == [
            [("a", 4), ("b", 3)]
        ]
    finally:
        await first.close()
        await second.close()


async def test_redis_answers_from_the_live_key_until_the_window_is_frozen(
    redis_url: str, redis_server: RedisServer, clock: FakeClock
) -> None:
    store = open_store(redis_url, clock=clock, retention=3600, history_top=2)
    assert isinstance(store, RedisStore)
    try:
        await store.add([(PAST_MINUTE, {"a": 4, "b": 3, "c": 3})])
        with redis_server.client() as client:
            # With history on, a live key outlives its window by LINGER, for freezing.
            ttl = client.pttl(store.keys.window(MINUTE, PAST_MINUTE)) / 1000
            assert ends(MINUTE, PAST_MINUTE) - T0 + LINGER - 2 < ttl
        clock.set(ends(MINUTE, PAST_MINUTE) + 30)
        assert await history_of(store).closed(Window.MINUTE, [PAST_MINUTE], 2) == [
            [("a", 4), ("b", 3)]
        ]
    finally:
        await store.close()


async def test_redis_freezes_what_froze_while_it_was_away(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    store = open_store(own_redis.url, clock=clock, retention=3600, history_top=2, redis_timeout=0.3)
    assert isinstance(store, RedisStore)
    try:
        await store.add([(PAST_MINUTE, {"a": 1})])
        await history_of(store).freeze()  # nothing due yet
        own_redis.pause()
        clock.set(ends(MINUTE, PAST_MINUTE) + 1)
        await history_of(store).freeze()  # Redis away: logged, tried again later
        own_redis.resume()
        clock.advance(120)
        await history_of(store).freeze()
        with own_redis.client() as client:
            assert client.exists(store.keys.frozen(MINUTE, PAST_MINUTE))
    finally:
        own_redis.resume()
        await store.close()
