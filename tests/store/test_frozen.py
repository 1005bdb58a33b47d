"""The memory store's frozen records and the top-K selection done a slice at a time."""

from __future__ import annotations

import sys
from array import array

from hypothesis import given
from hypothesis import strategies as st

from tophosts.store.frozen import Frozen, Selection


def ranked(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def select(counts: dict[str, int], k: int, budget: int) -> tuple[Frozen, int]:
    selection = Selection(counts, k)
    steps = 1
    while (record := selection.step(budget)) is None:
        steps += 1
    return record, steps


@given(
    counts=st.dictionaries(st.text(min_size=1, max_size=3), st.integers(1, 6), max_size=80),
    k=st.integers(1, 12),
    budget=st.integers(1, 20),
)
def test_the_selection_is_the_top_k_in_stats_order(
    counts: dict[str, int], k: int, budget: int
) -> None:
    record, steps = select(counts, k, budget)
    assert record.top(k) == ranked(counts)[:k]
    assert record.top(2) == ranked(counts)[: min(2, k)]
    # One step per budget of hosts read, and one more that finds the end.
    assert steps == len(counts) // budget + 1


def test_ties_at_the_cut_off_go_to_the_smallest_names_whatever_the_order_read() -> None:
    for names in (["d", "b", "a", "c", "e"], ["e", "d", "c", "b", "a"], ["a", "b", "c", "d", "e"]):
        counts = {"z": 9, **dict.fromkeys(names, 5), "y": 1}
        record, _ = select(counts, 3, 2)
        assert record.top(3) == [("z", 9), ("a", 5), ("b", 5)]


def test_hosts_read_in_rising_order_each_beat_the_last() -> None:
    # The worst order for the cut: every host read is better than all before it.
    counts = {f"h{i:05}": i for i in range(1, 20_001)}
    record, steps = select(counts, 100, 2048)
    assert record.top(100) == [(f"h{i:05}", i) for i in range(20_000, 19_900, -1)]
    assert steps == 10


def test_a_record_is_a_tuple_and_an_array_with_interned_names() -> None:
    host = "".join(["shared", ".example"])  # a fresh string, not the literal's object
    record = Frozen.of([(host, 3), ("b", 1)])
    assert isinstance(record.hosts, tuple)
    assert isinstance(record.counts, array)
    assert record.counts.typecode == "q"
    assert record.hosts[0] is sys.intern("shared.example")
    assert record.top(1) == [("shared.example", 3)]
    assert record.top(10) == [("shared.example", 3), ("b", 1)]
    assert Frozen.of([]).top(5) == []
