"""The collector's hold (tophosts.gcpause), with a fake clock."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tophosts.gcpause import LONGEST_HOLD, Hold, Share


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations collected while the test runs; the collector on, as it was."""
    was = gc.isenabled()
    gc.enable()
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)
        (gc.enable if was else gc.disable)()


def test_the_first_holder_turns_it_off_and_the_last_back_on(collections: list[int]) -> None:
    hold = Hold(Clock())
    first, second = Share(hold), Share(hold)
    first.take()
    first.take()  # a share is taken once
    assert not gc.isenabled()
    second.take()
    first.give_back()
    first.give_back()  # and given back once
    assert not gc.isenabled()
    assert hold.holders == 1
    second.give_back()
    assert gc.isenabled()
    assert hold.holders == 0


def test_a_collector_that_was_off_stays_off(collections: list[int]) -> None:
    gc.disable()
    share = Share(Hold(Clock()))
    share.take()
    share.give_back()
    assert not gc.isenabled()


def test_holders_that_overlap_without_end_let_it_collect_now_and_then(
    collections: list[int],
) -> None:
    clock = Clock()
    hold = Hold(clock)
    old = Share(hold)
    old.take()
    for n in range(5):  # a new batch in flight before each one ends
        clock.now = n * LONGEST_HOLD / 2
        new = Share(hold)
        new.take()
        old.give_back()
        old = new
    # Held 20 s without a pause: one full collection, at the first release past 10 s
    # held (15 s), and the collector still off for the batch in flight.
    assert collections.count(2) == 1
    assert not gc.isenabled()
    old.give_back()
    assert gc.isenabled()
