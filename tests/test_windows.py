from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tophosts.windows import (
    HOUR,
    MINUTE,
    Place,
    Span,
    Window,
    due,
    duration,
    ends,
    floor,
    floors,
    hour_of,
    kept_until,
    minute_of,
    minute_span,
    oldest_kept,
    past,
    place,
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


def test_the_minute_span_holds_its_reading_and_ends_where_the_next_begins() -> None:
    assert minute_span(utc("2026-11-30T10:32:15.5")) == (
        int(utc("2026-11-30T10:32:00")),
        int(utc("2026-11-30T10:33:00")),
    )
    assert minute_span(120.0) == (120, 180)
    assert minute_span(119.999) == (60, 120)


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


def test_a_minute_freezes_at_start_plus_120_and_an_hour_at_start_plus_7200() -> None:
    minute, hour = int(utc("2026-11-30T10:31:00")), int(utc("2026-11-30T09:00:00"))
    for size, start in ((MINUTE, minute), (HOUR, hour)):
        froze = ends(size, start)
        assert froze == start + 2 * size
        assert place(froze - 0.001, size, start, 3600) is Place.PAST
        assert place(froze, size, start, 3600) is Place.KEPT
        assert place(start + size - 0.001, size, start, 3600) is Place.OPEN
        assert place(start + size, size, start, 3600) is Place.PAST
        assert kept_until(size, start, 3600) == froze + 3600
        assert place(froze + 3600 - 0.001, size, start, 3600) is Place.KEPT
        assert place(froze + 3600, size, start, 3600) is Place.GONE
        # Without history, a window is gone as soon as it freezes.
        assert place(froze, size, start, 0) is Place.GONE
        assert list(due(size, froze - 1, froze)) == [start]
        assert list(due(size, froze, froze + size - 1)) == []


@given(
    now=st.floats(min_value=10**6, max_value=2**40, allow_nan=False),
    size=st.sampled_from([MINUTE, HOUR]),
    retention=st.sampled_from([0, 60, 5400, 86400, 7 * 86400]),
)
def test_the_oldest_kept_window_is_the_first_that_is_not_gone(
    now: float, size: int, retention: int
) -> None:
    oldest = oldest_kept(now, size, retention)
    assert oldest % size == 0
    assert place(now, size, oldest, retention) in (Place.KEPT, Place.PAST)
    assert place(now, size, oldest - size, retention) is Place.GONE
    # Frozen windows kept: retention / size of them, rounded down or up.
    kept = (past(now, Window(size)).start - oldest) // size
    assert kept in (retention // size, -(-retention // size))


@given(
    after=st.floats(min_value=10**6, max_value=2**40, allow_nan=False),
    span=st.floats(min_value=0, max_value=10**5, allow_nan=False),
    size=st.sampled_from([MINUTE, HOUR]),
)
def test_due_lists_exactly_the_windows_freezing_in_a_span(
    after: float, span: float, size: int
) -> None:
    until = after + span
    listed = list(due(size, after, until))
    first = floor(int(after), size) - 2 * size
    expected = [s for s in range(first, int(until) + 1, size) if after < s + 2 * size <= until]
    assert listed == expected


def test_durations_are_written_as_people_write_them() -> None:
    assert [duration(s) for s in (0, 60, 5400, 3600, 86400, 172800, 604800, 90)] == [
        "0", "1m", "90m", "1h", "24h", "2d", "7d", "90s"
    ]  # fmt: skip
