"""The line parsers of ``tophosts tail --format``: exact values, and only FormatError out."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tophosts import formats
from tophosts.events import MAX_COUNT
from tophosts.formats import FormatError

REASONS = {"no_host", "timestamp", "json", "fields"}

NGINX = (
    b'shop.example.com 10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 612 '
    b'"-" "curl/8.0"'
)
APACHE = (
    b'shop.example.com:443 10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" '
    b'200 2326 "http://x/" "Mozilla/5.0"'
)
HAPROXY = (
    b"10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 "
    b'- - ---- 1/1/1/1/0 0/0 {shop.example.com|Mozilla} {} "GET /index.html HTTP/1.1"'
)
CADDY = (
    b'{"level":"info","ts":1700000000.9431,"logger":"http.log.access","msg":"handled request",'
    b'"request":{"remote_ip":"127.0.0.1","proto":"HTTP/1.1","method":"GET",'
    b'"host":"shop.example.com","uri":"/","headers":{"Host":["evil.example"]}},"status":200}'
)
# 10/Oct/2000:13:55:36 -0700 is 20:55:36 UTC.
OCT_10 = 971211336


@pytest.fixture
def utc_plus_one() -> Iterator[None]:
    """The process in a fixed zone one hour east of UTC (HAProxy writes local time)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "XXX-1"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_nginx_vhost() -> None:
    assert formats.nginx_vhost(NGINX) == (OCT_10, b"shop.example.com")
    # The offset counts: the same wall time in UTC is seven hours earlier.
    utc = NGINX.replace(b"-0700", b"+0000")
    assert formats.nginx_vhost(utc) == (OCT_10 - 7 * 3600, b"shop.example.com")
    half = NGINX.replace(b"-0700", b"+0530")
    assert formats.nginx_vhost(half) == (OCT_10 - 7 * 3600 - 5 * 3600 - 1800, b"shop.example.com")


def test_combined_vhost_drops_the_port() -> None:
    assert formats.combined_vhost(APACHE) == (OCT_10, b"shop.example.com")
    assert formats.combined_vhost(APACHE.replace(b":443", b"")) == (OCT_10, b"shop.example.com")


def test_haproxy_reads_local_time_and_the_first_capture(utc_plus_one: None) -> None:
    # 06/Feb/2009 12:14:14 at UTC+1 is 11:14:14 UTC.
    assert formats.haproxy_httplog(HAPROXY) == (1233918854, b"shop.example.com")
    syslog = b"Feb  6 12:14:14 localhost haproxy[14389]: " + HAPROXY
    assert formats.haproxy_httplog(syslog) == (1233918854, b"shop.example.com")
    rfc5424 = b'<134>1 2009-02-06T12:14:14Z lb haproxy 14389 - [meta x="1"] ' + HAPROXY
    assert formats.haproxy_httplog(rfc5424) == (1233918854, b"shop.example.com")
    alone = HAPROXY.replace(b"{shop.example.com|Mozilla}", b"{shop.example.com}")
    assert formats.haproxy_httplog(alone) == (1233918854, b"shop.example.com")


def test_caddy_json_takes_request_host() -> None:
    assert formats.caddy(CADDY) == (1700000000, b"shop.example.com")


def test_tophosts_msec_host() -> None:
    assert formats.text(b"1700000000.123 shop.example.com") == (1700000000, b"shop.example.com")
    assert formats.text(b"1700000000 a.com 200 extra") == (1700000000, b"a.com")
    assert formats.text(b"1700000000.5 a.com\r") == (1700000000, b"a.com")


@pytest.mark.parametrize(
    ("parser", "line", "reason"),
    [
        (formats.nginx_vhost, b"", "fields"),
        (formats.nginx_vhost, b"just some words", "fields"),
        (formats.nginx_vhost, NGINX.replace(b"shop.example.com", b"-"), "no_host"),
        (formats.nginx_vhost, NGINX.replace(b"10/Oct", b"31/Feb"), "timestamp"),
        (formats.nginx_vhost, NGINX.replace(b"Oct", b"Okt"), "timestamp"),
        (formats.nginx_vhost, NGINX.replace(b"2000", b"1969"), "timestamp"),
        (formats.nginx_vhost, NGINX.replace(b"-0700", b"-07"), "timestamp"),
        (formats.nginx_vhost, NGINX.replace(b"13:55", b"24:55"), "timestamp"),
        (formats.combined_vhost, APACHE.replace(b"shop.example.com:443", b":443"), "no_host"),
        (formats.combined_vhost, b"a.com:80 no time here", "fields"),
        (
            formats.haproxy_httplog,
            HAPROXY.replace(b"{shop.example.com|Mozilla} {} ", b""),
            "fields",
        ),
        (formats.haproxy_httplog, HAPROXY.replace(b"|Mozilla} {} ", b" "), "fields"),
        (formats.haproxy_httplog, HAPROXY.replace(b"{shop.example.com|", b"{|"), "no_host"),
        (formats.haproxy_httplog, HAPROXY.replace(b".655]", b".6x5]"), "timestamp"),
        (formats.caddy, b'{"ts": "yesterday", "request": {"host": "a"}}', "json"),
        (formats.caddy, b'{"ts": 1, "request": {"host": ""}}', "no_host"),
        (formats.caddy, b'{"ts": -1, "request": {"host": "a"}}', "timestamp"),
        (formats.caddy, b"not json", "json"),
        (formats.text, b"", "no_host"),
        (formats.text, b"1700000000", "no_host"),
        (formats.text, b"1700000000 -", "no_host"),
        (formats.text, b"17000x0000 a.com", "timestamp"),
        (formats.text, b"99999999999999999 a.com", "timestamp"),
    ],
)
def test_what_is_not_the_format_is_a_format_error(
    parser: formats.Parser, line: bytes, reason: str
) -> None:
    with pytest.raises(FormatError) as error:
        parser(line)
    assert error.value.reason == reason
    assert error.value.detail


def test_an_haproxy_request_with_a_brace_before_the_captures_is_not_taken_for_them() -> None:
    # Without a capture, the first "{" is in the request line, after its quote.
    line = HAPROXY.replace(b"{shop.example.com|Mozilla} {} ", b"").replace(
        b"/index.html", b"/x{evil.com}"
    )
    with pytest.raises(FormatError):
        formats.haproxy_httplog(line)


def test_every_format_has_a_name() -> None:
    assert set(formats.LOG_FILE_FORMATS) == {
        "nginx-vhost",
        "combined-vhost",
        "haproxy",
        "caddy-json",
        "tophosts",
    }


@given(st.sampled_from(sorted(formats.LOG_FILE_FORMATS)), st.binary(max_size=400))
def test_any_bytes_give_a_result_or_a_format_error(name: str, line: bytes) -> None:
    try:
        second, host = formats.LOG_FILE_FORMATS[name](line)
    except FormatError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert reason in REASONS
        return
    assert 0 <= second <= MAX_COUNT
    assert isinstance(host, bytes)
    assert host


_host = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters='"[]{}|:\\'),
    min_size=1,
    max_size=40,
).filter(lambda h: h != "-")


@given(_host, st.integers(0, 4_102_444_800))
def test_a_written_line_reads_back(host: str, second: int) -> None:
    """The line a server writes for (second, host) parses back to exactly that."""
    raw = host.encode()
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
    nginx = raw + b" 10.0.0.1 - - [" + stamp + b'] "GET / HTTP/1.1" 200 1 "-" "-"'
    assert formats.nginx_vhost(nginx) == (second, raw)
    apache = raw + b":8080 10.0.0.1 - - [" + stamp + b'] "GET / HTTP/1.1" 200 1 "-" "-"'
    assert formats.combined_vhost(apache) == (second, raw)
    assert formats.text(b"%d.%03d %b" % (second, 7, raw)) == (second, raw)
    caddy = b'{"ts":%d.25,"request":{"host":"%b"}}' % (second, raw)
    assert formats.caddy(caddy) == (second, raw)


def test_the_time_cache_stays_bounded() -> None:
    for second in range(formats._CACHE_LIMIT * 2):
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
        assert formats.nginx_vhost(b"a.com 1 - - [" + stamp + b"] x")[0] == second
    assert len(formats._clf_time._seconds) <= formats._CACHE_LIMIT
