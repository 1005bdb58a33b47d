"""TCP framing: newline-delimited and octet-counted streams, in any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tophosts.syslog.framing import MAX_FRAME, Framer

LINES = [b"<13>a: 1 a.com", b"<13>b: 2 b.com", b'<13>c: {"x": 1}']


def octets(frames: list[bytes]) -> bytes:
    return b"".join(b"%d %s" % (len(f), f) for f in frames)


def feed_in_chunks(stream: bytes, cuts: list[int]) -> tuple[list[bytes], Framer]:
    framer = Framer()
    frames: list[bytes] = []
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        frames += framer.feed(stream[last:cut])
        last = cut
    return frames, framer


frames_st = st.lists(
    st.binary(min_size=1, max_size=40).map(lambda b: b"<1>" + b.replace(b"\n", b" ")),
    min_size=1,
    max_size=8,
)


@given(frames=frames_st, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_newline_frames_come_out_whole_whatever_the_chunking(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"\n".join(frames) + b"\n"
    got, framer = feed_in_chunks(stream, [c for c in cuts if c <= len(stream)])
    assert got == frames
    assert framer.octets is False
    assert framer.close() == b""


@given(frames=frames_st, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_octet_counted_frames_come_out_whole_whatever_the_chunking(
    frames: list[bytes], cuts: list[int]
) -> None:
    # Octet counting lets a frame hold newlines and anything else.
    frames = [f + b"\n\x00 x" for f in frames]
    stream = octets(frames)
    got, framer = feed_in_chunks(stream, [c for c in cuts if c <= len(stream)])
    assert got == frames
    assert framer.octets is True
    assert framer.close() == b""


def test_a_stream_cut_mid_frame_leaves_the_rest_for_close() -> None:
    framer = Framer()
    assert framer.feed(octets(LINES)[:-3]) == LINES[:2]
    assert framer.close() == b"%d %s" % (len(LINES[2]), LINES[2][:-3])
    framer = Framer()
    assert framer.feed(b"<13>a: 1 a.com\n<13>b: 2") == [b"<13>a: 1 a.com"]
    assert framer.close() == b"<13>b: 2"


def test_newlines_between_octet_counted_frames_are_skipped() -> None:
    assert Framer().feed(octets(LINES[:1]) + b"\n" + octets(LINES[1:])) == LINES


@pytest.mark.parametrize(
    "stream",
    [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b" <13>a: 1 a", b"\n", b"12x <13>"],
)
def test_garbage_is_refused(stream: bytes) -> None:
    framer = Framer()
    assert framer.feed(stream) == []
    assert framer.error is not None
    assert framer.error.reason == "garbage"
    assert framer.feed(b"<13>a: 1 a.com\n") == []  # nothing after the error


def test_a_zero_or_zero_padded_count_is_garbage() -> None:
    for stream in (b"0 ", b"012 <13>a: 1 a.com"):
        framer = Framer()
        framer.feed(stream)
        assert framer.error is not None
        assert framer.error.reason == "garbage"


def test_frames_over_64_kib_are_refused_before_they_are_buffered() -> None:
    framer = Framer()
    assert framer.feed(octets(LINES[:1]) + b"%d " % (MAX_FRAME + 1)) == LINES[:1]
    assert framer.error is not None
    assert framer.error.reason == "frame_too_large"

    framer = Framer()
    assert framer.feed(octets(LINES[:1]) + b"1234567") == LINES[:1]
    assert framer.error is not None
    assert framer.error.reason == "frame_too_large"

    framer = Framer()
    assert framer.feed(LINES[0] + b"\n<13>" + b"x" * MAX_FRAME) == [LINES[0]]
    assert framer.error is not None
    assert framer.error.reason == "frame_too_large"

    framer = Framer()
    framer.feed(b"<13>" + b"x" * (MAX_FRAME // 2))
    assert framer.error is None
    framer.feed(b"x" * (MAX_FRAME // 2))
    assert framer.error is not None


def test_a_frame_of_exactly_64_kib_passes() -> None:
    frame = b"<13>" + b"x" * (MAX_FRAME - 4)
    assert Framer().feed(octets([frame])) == [frame]
    assert Framer().feed(frame + b"\n") == [frame]
