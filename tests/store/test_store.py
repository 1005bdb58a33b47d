"""Store semantics through the Store protocol, for every store (see ``store_url``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.clock import T0, FakeClock
from tophosts.events import MAX_COUNT, Event, EventError, too_many_tracked, total_too_large
from tophosts.store import Added, Store, open_store
from tophosts.store.memory import MemoryStore
from tophosts.windows import Window, past

pytestmark = pytest.mark.anyio

MakeStore = Callable[..., Store]

# T0 is 22:13:20; the past minute is [22:12, 22:13) and the past hour [21:00, 22:00).
PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


async def test_counts_land_in_the_past_minute_and_hour(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.add([(PAST_MINUTE + 5, {"a.com": 3, "b.com": 1})]) == Added(1, 0, 4)
    assert await store.add([(PAST_MINUTE + 59, {"a.com": 1})]) == Added(1, 0, 1)
    assert await store.add([(PAST_HOUR, {"c.com": 7})]) == Added(1, 0, 7)
    assert await store.top(Window.MINUTE, 10) == [("a.com", 4), ("b.com", 1)]
    assert await store.top(Window.HOUR, 10) == [("c.com", 7)]


async def test_the_current_minute_counts_only_once_it_is_past(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    await store.add([(int(clock.now), {"now.com": 2})])
    assert await store.top(Window.MINUTE, 10) == []
    clock.advance(60)
    assert await store.top(Window.MINUTE, 10) == [("now.com", 2)]
    clock.advance(60)
    assert await store.top(Window.MINUTE, 10) == []


async def test_the_hour_window_rolls_on_the_hour(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    await store.add([(int(clock.now), {"a.com": 1}), (PAST_HOUR + 1, {"b.com": 1})])
    assert await store.top(Window.HOUR, 10) == [("b.com", 1)]
    clock.set(PAST_HOUR + 2 * 3600)  # the hour holding T0 is now the past one
    assert await store.top(Window.HOUR, 10) == [("a.com", 1)]


async def test_ties_break_by_host_name_and_limit_cuts(make_store: MakeStore) -> None:
    store = make_store()
    await store.add([(PAST_MINUTE, {"d": 5, "c": 5, "b": 9, "a": 5, "e": 1})])
    assert await store.top(Window.MINUTE, 10) == [("b", 9), ("a", 5), ("c", 5), ("d", 5), ("e", 1)]
    assert await store.top(Window.MINUTE, 3) == [("b", 9), ("a", 5), ("c", 5)]
    assert await store.top(Window.MINUTE, 1) == [("b", 9)]
    assert await store.top(Window.MINUTE, 5) == [("b", 9), ("a", 5), ("c", 5), ("d", 5), ("e", 1)]


async def test_zero_totals_are_not_listed(make_store: MakeStore) -> None:
    store = make_store()
    await store.add([(PAST_MINUTE, {"zero.com": 0, "one.com": 1})])
    assert await store.top(Window.MINUTE, 10) == [("one.com", 1)]
    assert await store.top(Window.MINUTE, 1) == [("one.com", 1)]


async def test_late_events_count_and_refresh_the_answer(make_store: MakeStore) -> None:
    store = make_store()
    await store.add([(PAST_MINUTE + 1, {"a.com": 1, "b.com": 2})])
    assert await store.top(Window.MINUTE, 10) == [("b.com", 2), ("a.com", 1)]
    await store.add([(PAST_MINUTE + 2, {"a.com": 5})])
    assert await store.top(Window.MINUTE, 10) == [("a.com", 6), ("b.com", 2)]
    assert await store.top(Window.HOUR, 10) == []  # T0's own hour is not past yet


async def test_events_before_the_past_hour_are_expired_and_not_stored(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    added = await store.add([(PAST_HOUR - 1, {"old.com": 5}), (PAST_HOUR, {"edge.com": 1})])
    assert added == Added(accepted=1, expired=1, host_counts=1)
    assert await store.add([(0, {"old.com": 1})]) == Added(0, 1)
    assert await store.top(Window.HOUR, 10) == [("edge.com", 1)]


async def test_future_events_within_the_skew_count_when_their_window_comes(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(max_skew=300)
    await store.add([(T0 + 300, {"soon.com": 4})])
    assert await store.top(Window.MINUTE, 10) == []
    clock.advance(360)
    assert await store.top(Window.MINUTE, 10) == [("soon.com", 4)]


async def test_events_beyond_the_skew_are_refused_naming_the_clock(make_store: MakeStore) -> None:
    store = make_store(max_skew=300)
    with pytest.raises(EventError) as info:
        await store.add([(T0 + 301, {"late.com": 1})])
    # A store names the event's place in what it was given, a batch of one too.
    assert info.value.index == 0
    for text in (str(T0 + 301), str(T0), "300", "301 s ahead"):
        assert text in info.value.message


async def test_a_batch_is_all_or_nothing(make_store: MakeStore) -> None:
    store = make_store(max_skew=300)
    batch: list[Event] = [(PAST_MINUTE, {"a.com": 1}), (T0 + 10_000, {"b.com": 1})]
    with pytest.raises(EventError) as info:
        await store.add(batch)
    assert info.value.index == 1
    assert await store.top(Window.MINUTE, 10) == []
    assert await store.top(Window.HOUR, 10) == []


async def test_a_total_past_2_53_is_refused_and_nothing_applied(make_store: MakeStore) -> None:
    store = make_store()
    await store.add([(PAST_MINUTE, {"big.com": MAX_COUNT - 1})])
    await store.add([(PAST_MINUTE, {"big.com": 1})])
    assert await store.top(Window.MINUTE, 1) == [("big.com", MAX_COUNT)]
    with pytest.raises(EventError) as info:
        await store.add([(PAST_MINUTE, {"other.com": 1}), (PAST_MINUTE, {"big.com": 1})])
    assert info.value.index == 1
    assert '"big.com"' in info.value.message
    assert await store.top(Window.MINUTE, 10) == [("big.com", MAX_COUNT)]


async def test_an_overflow_in_the_hour_alone_is_refused_too(make_store: MakeStore) -> None:
    # Events older than the past minute reach only their hour: the check must
    # cover that path of a batch as well as the minute one.
    store = make_store()
    await store.add([(PAST_HOUR + 5, {"big.com": MAX_COUNT}), (PAST_MINUTE, {"a.com": 1})])
    with pytest.raises(EventError) as info:
        await store.add(
            [
                (PAST_MINUTE, {"a.com": 1}),
                (PAST_HOUR + 7, {"x.com": 1}),
                (PAST_HOUR, {"big.com": 1}),
            ]
        )
    assert info.value.index == 2
    assert '"big.com"' in info.value.message
    assert await store.top(Window.HOUR, 10) == [("big.com", MAX_COUNT)]
    assert await store.top(Window.MINUTE, 10) == [("a.com", 1)]
    with pytest.raises(EventError) as info:
        await store.add([(PAST_HOUR, {"big.com": 1})])
    assert info.value.index == 0


async def test_the_host_cap_counts_an_hour_across_its_folded_and_live_minutes(
    clock: FakeClock,
) -> None:
    # Memory store only: the hour's hosts sit partly in its own dict (minutes
    # that left) and partly in live minutes; the cap must see them all, once.
    store = MemoryStore(clock=clock, max_tracked_hosts=3)
    hour = T0 - T0 % 3600
    clock.set(hour + 70)
    await store.add([(hour + 60, {"a": 1, "b": 1})])  # a live minute, folded once it leaves
    clock.set(hour + 180)
    await store.add([(hour + 121, {"b": 1, "c": 1})])  # the past minute, b in both
    with pytest.raises(EventError) as info:
        await store.add([(hour + 125, {"d": 1})])
    assert info.value.status == 429
    await store.add([(hour + 130, {"a": 2})])  # known hosts keep counting
    clock.set(hour + 3600 + 5)
    assert await store.top(Window.HOUR, 10) == [("a", 3), ("b", 2), ("c", 1)]


async def test_memory_is_released_when_windows_expire(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    await store.add([(PAST_MINUTE + i % 60, {f"h{i}.com": 1}) for i in range(5_000)])
    sizes = await store.sizes()
    assert (sizes.minute_hosts, sizes.hour_hosts, sizes.windows) == (5_000, 5_000, 2)
    clock.advance(60)  # the minute leaves; its hour (T0's) is still live
    sizes = await store.sizes()
    assert (sizes.minute_hosts, sizes.hour_hosts, sizes.windows) == (0, 5_000, 1)
    clock.advance(2 * 3600)
    assert await store.sizes() == (0, 0, 0, 0)


async def test_many_events_over_few_hosts_keep_few_entries(make_store: MakeStore) -> None:
    store = make_store()
    for _ in range(20):
        await store.add([(PAST_MINUTE, {f"h{i % 100}": 1}) for i in range(1_000)])
    sizes = await store.sizes()
    assert (sizes.minute_hosts, sizes.hour_hosts) == (100, 100)
    assert await store.top(Window.MINUTE, 1) == [("h0", 200)]


# -- the model: any order and batching of valid events gives the naive recount --


def naive_top(events: list[Event], now: float, window: Window, limit: int) -> list[tuple[str, int]]:
    start, end = past(now, window)
    totals: Counter[str] = Counter()
    for ts, counts in events:
        if start <= ts < end:
            totals.update(counts)
    ranked = sorted(((h, n) for h, n in totals.items() if n > 0), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit]


_examples = itertools.count()
timestamps = st.integers(PAST_HOUR - 120, T0 + 300)
counts = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 5), min_size=1, max_size=4)
event_lists = st.lists(st.tuples(timestamps, counts), max_size=40)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=event_lists,
    cuts=st.lists(st.integers(0, 40), max_size=6),
    limit=st.integers(1, 9),
    later=st.sampled_from([0, 60, 3600, 3660]),
)
def test_any_order_and_batching_matches_a_naive_recount(
    store_url: str,
    events: list[Event],
    cuts: list[int],
    limit: int,
    later: int,
) -> None:
    clock = FakeClock()
    # Each example gets keys of its own on the shared Redis.
    store = open_store(store_url, clock=clock, redis_prefix=f"t{next(_examples)}")
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    batches = [events[a:b] for a, b in itertools.pairwise(bounds)]

    async def run() -> None:
        for batch in batches:
            await store.add([(ts, dict(c)) for ts, c in batch])
        clock.advance(later)
        live = [(ts, c) for ts, c in events if ts >= past(T0, Window.HOUR).start]
        for window in Window:
            assert await store.top(window, limit) == naive_top(live, clock.now, window, limit)
        await store.close()

    asyncio.run(run())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0, 1, 30, 59, 60, 61, 600, 3540, 3600]), event_lists),
        min_size=1,
        max_size=6,
    ),
    limit=st.integers(1, 9),
)
def test_adds_between_window_turns_match_a_naive_recount(
    store_url: str, steps: list[tuple[int, list[Event]]], limit: int
) -> None:
    # The clock moves between batches, so minutes leave (and are folded into
    # their hour) while more events arrive for them, late or on time; every
    # query along the way must match a recount of what was accepted.
    clock = FakeClock()
    # Each example gets keys of its own on the shared Redis.
    store = open_store(store_url, clock=clock, max_skew=86_400, redis_prefix=f"t{next(_examples)}")
    accepted: list[Event] = []

    async def run() -> None:
        for advance, batch in steps:
            clock.advance(advance)
            await store.add([(ts, dict(c)) for ts, c in batch])
            floor = past(clock.now, Window.HOUR).start
            accepted.extend((ts, c) for ts, c in batch if ts >= floor)
            for window in Window:
                got = await store.top(window, limit)
                assert got == naive_top(accepted, clock.now, window, limit)
        await store.close()

    asyncio.run(run())


# -- issue 11: one precedence, zero counts, the hour's exact host count -------


async def test_an_overflow_beats_the_host_cap_in_both_stores(make_store: MakeStore) -> None:
    store = make_store(max_tracked_hosts=1)
    await store.add([(PAST_MINUTE, {"a": MAX_COUNT})])
    for events in ([(PAST_MINUTE, {"a": 1, "b": 1})], [(PAST_MINUTE, {"b": 1, "a": 1})]):
        with pytest.raises(EventError) as info:
            await store.add(events)
        assert (info.value.status, info.value.index) == (400, 0)
        assert info.value.message == total_too_large("a", 0).message
    # Without the overflow, the cap speaks.
    with pytest.raises(EventError) as info:
        await store.add([(PAST_MINUTE, {"b": 1})])
    assert (info.value.status, info.value.message) == (
        429,
        too_many_tracked(3600, "b", 1, 0).message,
    )


async def test_zero_counts_never_fill_the_host_cap(make_store: MakeStore) -> None:
    store = make_store(max_tracked_hosts=3)
    assert await store.add([(PAST_MINUTE, {"z1": 0, "z2": 0, "z3": 0})]) == Added(1, 0, 0)
    assert await store.add([(PAST_MINUTE, {"z4": 0}), (PAST_MINUTE, {"z5": 0})]) == Added(2, 0, 0)
    await store.add([(PAST_MINUTE, {"a": 1, "b": 1, "c": 1, "z6": 0})])
    assert await store.top(Window.MINUTE, 10) == [("a", 1), ("b", 1), ("c", 1)]
    assert (await store.sizes()).hour_hosts == 3


async def test_a_host_in_two_live_minutes_is_one_host_of_the_hour(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(max_tracked_hosts=2)
    now = int(clock.now)
    await store.add([(PAST_MINUTE, {"a": 1}), (now, {"a": 1, "b": 1})])
    sizes = await store.sizes()
    assert (sizes.minute_hosts, sizes.hour_hosts) == (3, 2)
    await store.add([(now, {"a": 1, "b": 1})])  # at the cap, known hosts still count
    with pytest.raises(EventError) as info:
        await store.add([(now, {"c": 1})])
    assert info.value.status == 429


def test_the_host_cap_costs_what_the_event_holds_not_what_the_hour_holds(
    clock: FakeClock,
) -> None:
    # Memory store: the check at a full cap used to copy the whole hour into a
    # set for every event (defect 7). Peak allocation says what an event cost.
    import tracemalloc

    cap = 50_000
    store = MemoryStore(clock=clock, max_tracked_hosts=cap)
    store.add_now([(PAST_MINUTE, {f"junk{i}": 1 for i in range(cap)})])
    for event, refused in (({"junk0": 1}, False), ({"junk1": 1, "new": 1}, True)):
        tracemalloc.start()
        try:
            with pytest.raises(EventError) if refused else contextlib.nullcontext():
                store.add_now([(PAST_MINUTE, event)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64_000  # a set of 50k hosts is over 2 MB
