"""The syslog header: RFC 3164 and RFC 5424 lines into (tag, body)."""

from __future__ import annotations

import contextlib
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tophosts.syslog.header import HeaderError, split
from tophosts.syslog.lines import LineError, Reader


@pytest.mark.parametrize(
    ("line", "tag", "body"),
    [
        # What nginx 1.22 and HAProxy 2.6 send (issue 14).
        (
            b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 shop.example.com 200",
            b"nginx",
            b"1796133332.584 shop.example.com 200",
        ),
        (
            b"<134>Dec  1 14:14:50 haproxy[27574]: 1796134490.754 shop.example",
            b"haproxy",
            b"1796134490.754 shop.example",
        ),
        (b"<13>Dec 11 14:14:50 host tophosts: 1 a.com", b"tophosts", b"1 a.com"),
        (b"<13>apache: 1 a.com", b"apache", b"1 a.com"),
        (b"<13>Dec  1 14:14:50 apache[7]: 1 a: b", b"apache", b"1 a: b"),
        (b"<13>Dec  1 14:14:50 host nginx:", b"nginx", b""),
        (b"<0>Dec  1 14:14:50 host untagged words", b"", b"host untagged words"),
        # RFC 5424: rsyslog's RSYSLOG_SyslogProtocol23Format and util-linux logger.
        (
            b"<190>1 2026-12-01T13:55:32.584+00:00 vm nginx - - - 1796133332.584 a.com",
            b"nginx",
            b"1796133332.584 a.com",
        ),
        (
            b'<13>1 2026-12-01T13:55:32Z vm apache 42 - [timeQuality tzKnown="1" '
            b'isSynced="0"] 1796133332 a.com',
            b"apache",
            b"1796133332 a.com",
        ),
        (
            b'<13>1 - - - - - [a x="\\]\\"\\\\"][b] \xef\xbb\xbf1 a.com',
            b"",
            b"1 a.com",
        ),
        (b"<13>1 - - tag - - -", b"tag", b""),
        # No header at all: Caddy's JSON, or a bare line.
        (b'{"ts": 1}', b"", b'{"ts": 1}'),
        (b"1 a.com", b"", b"1 a.com"),
    ],
)
def test_split(line: bytes, tag: bytes, body: bytes) -> None:
    assert split(line) == (tag, body)


@pytest.mark.parametrize(
    "line",
    [
        b"<",
        b"<>x",
        b"<1234>x",
        b"<192>x",
        b"<a1>x",
        b"<13>1 2026-12-01T13:55:32Z vm",
        b"<13>1 - - - - - x",
        b"<13>1 - - - - - [unclosed x",
        b'<13>1 - - - - - [a x="]',
        b"<13>1 - - - - - [a]x",
    ],
)
def test_bad_headers_raise(line: bytes) -> None:
    with pytest.raises(HeaderError) as caught:
        split(line)
    assert caught.value.reason == "header"


def test_the_tag_picks_the_format_and_the_body_decides_otherwise() -> None:
    read = Reader().read
    assert read(b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 a.com 200") == (
        1796133332,
        b"a.com",
    )
    assert read(b"<134>Dec  1 14:14:50 haproxy[1]: 1796134490.754 b.com\n") == (
        1796134490,
        b"b.com",
    )
    assert read(b'{"ts": 7.9, "request": {"host": "c.com"}}\r\n') == (7, b"c.com")
    assert read(b'<14>Dec  1 14:14:50 x tophosts: {"ts": 7, "request": {"host": "d"}}') == (7, b"d")
    forced = Reader("caddy").read
    with pytest.raises(ValueError, match="Caddy"):
        forced(b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 a.com 200")
    with pytest.raises(ValueError, match="unknown format"):
        Reader("json")


def test_bad_lines_leave_no_memory_behind() -> None:
    # A kept exception instance raised again and again grows its traceback at
    # each raise: a sender of garbage would grow the server without bound.
    read = Reader().read
    bad = [b"x", b"<999>x", b"<13>1 - - - - - [", b"{", b"<13>a: 1 -", b"<13>a: z a"]

    def flood() -> None:
        for _ in range(5000):
            for line in bad:
                with contextlib.suppress(*LineError):
                    read(line)

    flood()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        flood()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes kept after 30,000 bad lines"


@pytest.mark.parametrize(
    "line",
    [
        b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 a.com 200",
        b"<134>Dec  1 14:14:50 haproxy[27574]: 1796134490.754 b.com\n",
        b"<13>x: 1 a.com\r\n",
        b"<13>x:  \t1 a.com",
        b"<13>Dec  1 14:14:50 h caddy: 1 a.com",  # the tag says Caddy: not text
        b"<13>1 - - x - - - 1 a.com",  # RFC 5424: the careful way
        b"<13>x : 1 a.com",
        b"<192>x: 1 a.com",
        b"<13>x: 9999999999999999 a.com",
        b"<13>x: 1.5e3 a.com",
        b"<13>x: 1 -",
    ],
)
def test_the_fast_path_answers_as_the_careful_way_or_not_at_all(line: bytes) -> None:
    for reader in (Reader(), Reader("nginx"), Reader("caddy")):
        fast = reader.fast(line)
        try:
            careful: object = reader.careful(line)
        except LineError as exc:
            careful = exc.reason
        assert fast is None or fast == careful
    assert Reader().fast(b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 a.com 200") == (
        1796133332,
        b"a.com",
    )


def test_structured_data_is_read_up_to_8_kib() -> None:
    sd = b'[a x="' + b"\\]" * 4000 + b'"]'
    assert split(b"<13>1 - - t - - " + sd + b" 1 a.com") == (b"t", b"1 a.com")
    with pytest.raises(HeaderError, match="8 KiB"):
        split(b"<13>1 - - t - - [a" + b" x" * 5000 + b"] 1 a.com")


_pieces = st.sampled_from
near_lines = st.tuples(
    _pieces([b"<190>", b"<13>", b"<191>", b"<192>", b"<001>", b"<1", b"", b"<13>1 "]),
    _pieces(
        [
            b"Dec  1 13:55:32 ",
            b"Dec 11 13:55:32 ",
            b"Dec 1 13:55:32 ",
            b"",
            b"2026-12-01T13:55:32Z ",
        ]
    ),
    _pieces([b"vm ", b"", b"a:b ", b"[::1] ", b"- "]),
    _pieces([b"nginx", b"caddy", b"caddyx", b"haproxy[27574]", b"a[1]b", b"tophosts", b"", b"-"]),
    _pieces([b": ", b":", b" : ", b":  ", b": \t", b"::", b": \x0c"]),
    _pieces(
        [b"1796133332", b"1796133332.584", b"1796133332.", b"9" * 16, b"9" * 17, b"1.5e3", b"x"]
    ),
    _pieces([b" ", b"\t", b"  ", b"\x0b", b"\n", b""]),
    _pieces([b"a.com", b"-", b"A.Example:8443", b"a\x0bb", b"\xff", b"a\x00b", b"", b"{"]),
    _pieces([b"", b" 200", b"\n", b"\r\n", b"\t200 x", b"\x0c"]),
)


@settings(max_examples=2000, deadline=None)
@given(near_lines)
def test_the_fast_path_agrees_with_the_careful_way_on_near_lines(
    pieces: tuple[bytes, ...],
) -> None:
    line = b"".join(pieces)
    for reader in (Reader(), Reader("text"), Reader("caddy")):
        fast = reader.fast(line)
        if fast is None:
            continue
        assert reader.careful(line) == fast
