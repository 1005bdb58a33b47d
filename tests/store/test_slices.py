"""A large batch is summed a slice at a time, the loop free between, and applied at once.

Each store must give a batch taken in slices (here of 2 host counts: ``small_slices``)
exactly what it gives the batch at once: the same answer or refusal, the same
windows after. And what other requests do between two slices is checked with
the batch when it is applied, never over it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import WIDE_TIMEOUT
from tests.support.clock import T0, FakeClock
from tests.support.slices import small_slices
from tophosts.events import MAX_COUNT, Event, EventError
from tophosts.store import Added, Store, open_store
from tophosts.store.memory import MemoryStore
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start
_examples = itertools.count()

pytestmark = pytest.mark.anyio

timestamps = st.one_of(
    st.integers(PAST_HOUR - 120, T0 + 300),  # expired, live, within the skew
    st.just(T0 + 400),  # beyond it
)
counts = st.dictionaries(
    st.sampled_from("abcdef"),
    st.one_of(st.integers(0, 5), st.just(MAX_COUNT)),
    min_size=1,
    max_size=3,
)
batches = st.lists(st.tuples(timestamps, counts), min_size=2, max_size=12)


async def _outcome(store: Store, events: list[Event]) -> object:
    try:
        return await store.add([(ts, dict(c)) for ts, c in events])
    except EventError as error:
        return (error.message, error.index, error.status)


async def _windows(store: Store) -> object:
    return [await store.top(window, 100) for window in Window], await store.sizes()


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=batches, batch=batches, cap=st.integers(1, 7))
def test_a_batch_in_slices_is_what_it_is_at_once(
    store_url: str, before: list[Event], batch: list[Event], cap: int
) -> None:
    clock = FakeClock()

    def make() -> Store:
        return open_store(
            store_url,
            clock=clock,
            max_tracked_hosts=cap,
            redis_prefix=f"s{next(_examples)}",
            redis_timeout=WIDE_TIMEOUT,  # a busy machine must not turn an answer into a 503
        )

    async def run() -> None:
        whole, sliced = make(), make()
        for store in (whole, sliced):
            await _outcome(store, before)
        expected = await _outcome(whole, batch)
        with small_slices(2):
            got = await _outcome(sliced, batch)
        assert got == expected
        assert await _windows(sliced) == await _windows(whole)
        for store in (whole, sliced):
            await store.close()

    asyncio.run(run())


async def test_the_loop_runs_between_slices(make_store: Callable[..., Store]) -> None:
    store = make_store()
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    with small_slices(10):
        added = await store.add([(PAST_MINUTE + i % 60, {"a": 1}) for i in range(100)])
    task.cancel()
    assert added == Added(100, 0, 100)
    assert turns - before >= 10  # one turn of the loop a slice, at least
    assert await store.top(Window.MINUTE, 1) == [("a", 100)]


async def test_a_host_added_between_two_slices_counts_toward_the_cap() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, max_tracked_hosts=3)
    batch: list[Event] = [(PAST_MINUTE, {"a": 1}), (PAST_MINUTE, {"b": 1}), (PAST_MINUTE, {"c": 1})]

    async def meanwhile() -> None:
        await asyncio.sleep(0)  # the batch's first slice is summed
        assert store.add_now([(PAST_MINUTE, {"z": 1})]) == Added(1, 0, 1)

    with small_slices(1):
        other = asyncio.create_task(meanwhile())
        with pytest.raises(EventError) as info:
            await store.add(batch)
        await other
    # "z" took the room "c" needed: the batch is refused whole, at its third event.
    assert (info.value.status, info.value.index) == (429, 2)
    assert store.top_now(Window.MINUTE, 10) == [("z", 1)]


async def test_an_hour_that_turns_while_a_batch_is_summed_has_it_summed_again() -> None:
    hour = PAST_HOUR + 3600  # 22:00, the hour holding T0
    clock = FakeClock(hour + 3599)  # 22:59:59: the past hour is 21:00
    store = MemoryStore(clock)
    batch: list[Event] = [(hour - 1800, {"a": 1}), (hour + 1800, {"b": 1}), (hour + 3590, {"c": 1})]

    async def meanwhile() -> None:
        await asyncio.sleep(0)
        clock.set(hour + 3600)  # 23:00: the 21:00 hour leaves while the batch is summed

    with small_slices(1):
        other = asyncio.create_task(meanwhile())
        added = await store.add(batch)
        await other
    # As at once at 23:00: the 21:30 event expired, the others count.
    assert added == MemoryStore(FakeClock(hour + 3600)).add_now(batch) == Added(2, 1, 2)
    assert store.top_now(Window.HOUR, 10) == [("b", 1), ("c", 1)]


async def test_a_key_is_kept_with_a_batch_taken_in_slices() -> None:
    store = MemoryStore(FakeClock())
    batch: list[Event] = [(PAST_MINUTE + i, {"a": 1}) for i in range(5)]
    key = (b"k" * 15, 7)
    with small_slices(2):
        assert await store.add(batch, key) == Added(5, 0, 5)
        again = await store.add(batch, key)
    assert again.replayed
    assert again.accepted == 5
    assert store.top_now(Window.MINUTE, 10) == [("a", 5)]


async def test_a_zero_count_in_a_later_slice_is_not_tracked(
    make_store: Callable[..., Store],
) -> None:
    # Slices of 2 host counts: "z" with a count of 0 comes in a later slice than the
    # first of its minute, whose sum it is added into.
    store = make_store()
    events: list[Event] = [(PAST_MINUTE, {"a": 1, "b": 1}), (PAST_MINUTE + 1, {"z": 0, "a": 2})]
    with small_slices(2):
        assert await store.add(events) == Added(2, 0, 4)
    assert await store.top(Window.MINUTE, 10) == [("a", 3), ("b", 1)]
    sizes = await store.sizes()
    assert (sizes.minute_hosts, sizes.hour_hosts) == (2, 2)
