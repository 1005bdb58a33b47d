"""The bulk read of many lines at once: what it reads, it reads as the careful way does."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.syslog import assert_as_careful, through_bulk
from tophosts.syslog.bulk import Bulk
from tophosts.syslog.lines import FORMAT_NAMES

NGINX = b"<190>Dec  1 13:55:32 vm nginx: 1796133332.584 shop.example.com 200"
HAPROXY = b"<134>Dec  1 14:14:50 haproxy[27574]: 1796134490.754 shop.example\n"


def test_the_servers_lines_are_read_in_bulk() -> None:
    lines = [NGINX, HAPROXY, b"<190>Dec 11 03:05:09 vm nginx: 1796133333 b.com"]
    for name in ("auto", "text", "nginx"):
        assert Bulk(name).read(lines) == (
            [
                (
                    [b"1796133332", b"1796134490", b"1796133333"],
                    [b"shop.example.com", b"shop.example", b"b.com"],
                )
            ],
            [],
        )
    assert Bulk("caddy").read(lines) == ([], lines)


def test_the_second_of_the_last_lines_is_read_first() -> None:
    bulk = Bulk()
    bulk.read([NGINX])
    assert bulk.second == b"1796133332"
    later = NGINX.replace(b"1796133332.584", b"1796133333.002")
    lines = [NGINX, b"garbage", later, NGINX.replace(b"shop", b"tea")]
    assert bulk.read(lines) == (
        [
            (b"1796133332", [b"shop.example.com", b"tea.example.com"]),
            ([b"1796133333"], [b"shop.example.com"]),
        ],
        [b"garbage"],
    )
    assert bulk.second == b"1796133333"
    # Digits that start with the second's are another second.
    longer = NGINX.replace(b"1796133332.584", b"17961333331.5")
    assert bulk.read([longer]) == ([([b"17961333331"], [b"shop.example.com"])], [])


def test_lines_it_does_not_read_come_back_in_order() -> None:
    lines = [b"garbage", NGINX, b"<13>1 - - x - - - 1 a.com", b"", HAPROXY, b'{"ts": 1}']
    for second in (None, b"1796133332"):
        bulk = Bulk()
        bulk.second = second
        reads, others = bulk.read(lines)
        assert [hosts for _, hosts in reads] == (
            [[b"shop.example.com"], [b"shop.example"]]
            if second
            else [[b"shop.example.com", b"shop.example"]]
        )
        assert others == [b"garbage", b"<13>1 - - x - - - 1 a.com", b"", b'{"ts": 1}']
        assert_as_careful("auto", lines, bulk)


@pytest.mark.parametrize(
    "odd",
    [
        NGINX + b"\t",  # a blank the expression does not know
        NGINX + b"\n\n",
        NGINX.replace(b"200", b"2\r0"),
        b"x\x00" + NGINX,  # a NUL: a line start inside a line
        NGINX + b"\x00<190>Dec  1 13:55:32 vm nginx: 1 other.com",
        b"<190>Dec  1 13:55:32 vm caddy: 1 a.com",  # with auto, Caddy's JSON
        b"<190>Dec  1 13:55:32 vm caddy[7]: 1 a.com",
    ],
)
@pytest.mark.parametrize("second", [None, b"1796133332", b"1"])
def test_a_batch_with_an_odd_line_goes_line_by_line(odd: bytes, second: bytes | None) -> None:
    lines = [NGINX, odd, HAPROXY]
    bulk = Bulk()
    bulk.second = second
    assert bulk.read(lines) == ([], lines)
    assert_as_careful("auto", lines, bulk)


def test_what_the_flush_checks_is_what_the_careful_way_refuses() -> None:
    lines = [
        b"<190>Dec  1 13:55:32 vm nginx: 00000000000000001 a.com",  # 17 digits
        b"<190>Dec  1 13:55:32 vm nginx: 9999999999999999 a.com",  # past 2^53 - 1
        b"<190>Dec  1 13:55:32 vm nginx: 1796133332.5 - 200",  # no Host header
        b"<190>Dec  1 13:55:32 vm nginx: 0000000000000001.5 a.com",  # 16 digits: fine
    ]
    assert assert_as_careful("auto", lines) == 4
    assert through_bulk("auto", lines)[0] == Counter(
        {"timestamp": 2, "no_host": 1, (1, b"a.com"): 1}
    )


def _piece(good: list[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``good`` four times as often as one of ``odd``: most lines are common
    lines, with a few odd pieces that the bulk read must tell from them."""
    return st.sampled_from(good * (4 * len(odd) // len(good) or 1) + odd)


near_lines = st.tuples(
    _piece([b"<190>", b"<134>", b"<13>", b"<191>", b"<0>"], [b"<192>", b"<001>", b"<1", b""]),
    _piece([b"Dec  1 13:55:32 ", b"Jan 11 3:05:09 "], [b"dec 1 13:55:32 ", b"", b"1 ", b"D 1:: "]),
    _piece([b"vm ", b""], [b"a:b ", b"[::1] ", b"- ", b"\x00 ", b"x : "]),
    _piece(
        [b"nginx", b"haproxy[27574]", b"tophosts", b"a[1]b"],
        [b"caddy", b"caddyx", b"caddy[1]", b"", b"a:"],
    ),
    _piece([b": ", b":  "], [b":", b" : ", b": \t", b"::", b": \x0c", b": :"]),
    _piece(
        [b"1796133332", b"1796133332.584", b"1796133332.", b"9" * 16],
        [b"0" * 17, b"1.5e3", b"1..5", b".5", b""],
    ),
    _piece([b" ", b"  "], [b"\t", b"\x0b", b"\n", b""]),
    _piece(
        [b"a.com", b"A.Example:8443", b"\xff", b"a\x00b"],
        [b"-", b":8443", b"", b"{", b":", b"a\rb"],
    ),
    _piece([b"", b" 200", b"\n", b"\r\n"], [b"\r", b"\t200 x", b" -", b" \x00", b" :\x00<1>"]),
)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(st.lists(near_lines.map(b"".join), min_size=1, max_size=8), st.sampled_from(FORMAT_NAMES))
def test_a_batch_of_near_lines_counts_as_line_by_line(lines: list[bytes], name: str) -> None:
    bulk = Bulk(name)
    assert_as_careful(name, lines, bulk)
    # Again, with the second of its last line read first; then with a common one.
    assert_as_careful(name, lines, bulk)
    bulk.second = b"1796133332"
    assert_as_careful(name, lines, bulk)
    for line in lines:
        assert_as_careful(name, [line])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6))
def test_a_batch_of_any_bytes_counts_as_line_by_line(lines: list[bytes]) -> None:
    bulk = Bulk()
    assert_as_careful("auto", [*lines, NGINX], bulk)
    assert_as_careful("auto", [NGINX, *lines], bulk)
