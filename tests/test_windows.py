from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tophosts.windows import (
    HOUR,
    MINUTE,
    Span,
    Window,
    ends,
    floor,
    floors,
    hour_of,
    minute_of,
    past,
    starts,
)


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_past_minute_and_hour_at_10_32_15() -> None:
    now = utc("2026-11-30T10:32:15")
    assert past(now, Window.MINUTE) == Span(
        int(utc("2026-11-30T10:31:00")), int(utc("2026-11-30T10:32:00"))
    )
    assert past(now, Window.HOUR) == Span(
        int(utc("2026-11-30T09:00:00")), int(utc("2026-11-30T10:00:00"))
    )


def test_on_the_boundary_the_window_just_closed_is_the_past_one() -> None:
    now = utc("2026-11-30T10:00:00")
    assert past(now, Window.MINUTE) == Span(int(utc("2026-11-30T09:59:00")), int(now))
    assert past(now, Window.HOUR) == Span(int(utc("2026-11-30T09:00:00")), int(now))


def test_fractional_clock_readings_floor() -> None:
    assert past(119.999, Window.MINUTE) == Span(0, 60)
    assert past(120.0, Window.MINUTE) == Span(60, 120)


def test_floors_are_the_starts_of_the_past_minute_and_hour() -> None:
    now = utc("2026-11-30T10:32:15")
    assert floors(now) == (int(utc("2026-11-30T10:31:00")), int(utc("2026-11-30T09:00:00")))
    assert floors(now) == (past(now, Window.MINUTE).start, past(now, Window.HOUR).start)


def test_a_window_ends_when_it_stops_being_the_past_one() -> None:
    start = int(utc("2026-11-30T10:31:00"))
    assert ends(MINUTE, start) == int(utc("2026-11-30T10:33:00"))
    assert past(ends(MINUTE, start) - 0.001, Window.MINUTE).start == start
    assert past(ends(MINUTE, start), Window.MINUTE).start != start
    assert ends(HOUR, int(utc("2026-11-30T09:00:00"))) == int(utc("2026-11-30T11:00:00"))


def test_starts_cover_every_window_from_one_time_to_another() -> None:
    assert list(starts(MINUTE, 61, 240.5)) == [60, 120, 180, 240]
    assert list(starts(HOUR, 3599, 3599)) == [0]


def test_labels_round_trip() -> None:
    assert [w.label for w in Window] == ["minute", "hour"]
    assert Window.from_label("hour") is Window.HOUR
    with pytest.raises(KeyError):
        Window.from_label("day")


@given(now=st.floats(min_value=0, max_value=2**40, allow_nan=False), window=st.sampled_from(Window))
def test_past_window_is_the_last_whole_aligned_window_before_now(
    now: float, window: Window
) -> None:
    start, end = past(now, window)
    assert end - start == window.value
    assert end % window.value == 0
    assert end <= now < end + window.value


@given(ts=st.integers(min_value=0, max_value=2**53), size=st.sampled_from([MINUTE, HOUR]))
def test_floor_holds_the_timestamp(ts: int, size: int) -> None:
    start = floor(ts, size)
    assert start % size == 0
    assert start <= ts < start + size
    assert start == (minute_of(ts) if size == MINUTE else hour_of(ts))
