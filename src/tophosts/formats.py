"""Access-log line formats: one log line (or syslog message body) in, ``(timestamp, host)`` out.

Pure and I/O-free, for the syslog receiver, ``tophosts tail`` and anything else
that reads access logs, and fast: each parser finds its two fields with
``bytes.find``/``split`` (or one msgspec decode, for JSON) and converts a time
string once per distinct value (a small bounded cache), never once per line. A
parser takes one line or message body as bytes and returns ``(seconds, host)``:
the request's time, floored to an integer of Unix seconds, and the host name
exactly as the server wrote it, still as bytes (decoding and the host rules are
applied once per distinct host by the caller, see
:func:`tophosts.events.check_host`). Anything else raises :class:`FormatError`
with a short, fixed ``reason`` fit for a metric label.

``text``
    ``<unix seconds>[.<fraction>] <host>[ <anything>]``: what the documented
    nginx (``$msec $host``), HAProxy (``%Ts.%ms %[capture.req.hdr(0)]``) and
    Apache (``%{sec}t %V``) configurations write. Fields past the host are
    ignored, so a format may carry more (``$status``, say).
``caddy``
    Caddy's JSON access log: the ``ts`` (float Unix seconds, Caddy's default)
    and ``request.host`` members of one object.
``nginx_vhost``
    nginx's ``combined`` with ``$host`` in front:
    ``<host> <addr> - <user> [10/Oct/2000:13:55:36 -0700] "<request>" ...``.
``combined_vhost``
    Apache's ``vhost_combined``: the same, with ``%v:%p`` (host and port) in front.
``haproxy_httplog``
    HAProxy's ``option httplog`` line with the Host header as the first request
    capture: ``... [06/Feb/2009:12:14:14.655] ... {<host>|...} ...``. HAProxy
    writes that date in its local time without an offset; it is read in this
    process's local time zone (``TZ``).

:data:`FORMATS` names the syslog receiver's (``nginx``, ``haproxy`` and
``apache`` are the ``text`` parser under the name of the server whose snippet
writes it); :data:`LOG_FILE_FORMATS` those of ``tophosts tail --format``
(``tophosts`` is ``text``, ``caddy-json`` is ``caddy``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
import time
from collections.abc import Callable

import msgspec

from tophosts.events import MAX_COUNT

Parsed = tuple[int, bytes]
"""``(unix seconds, host as the server wrote it)``."""

Parser = Callable[[bytes], Parsed]

# The longest timestamp accepted: MAX_COUNT has 16 digits.
_MAX_DIGITS = len(str(MAX_COUNT))


class FormatError(ValueError):
    """A body that does not match its format; ``reason`` is one short fixed word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Each error is a new instance: raising a kept one would chain a traceback (and
# the frames it holds) onto it at every raise, without bound.


def no_host() -> FormatError:
    """The error for a body without a host after its timestamp."""
    return FormatError("no_host", "no host after the timestamp (expected '<seconds> <host>')")


def bad_timestamp() -> FormatError:
    """The error for a first field that is not Unix seconds."""
    return FormatError(
        "timestamp",
        f"the first field is not Unix seconds (digits, an optional .fraction, at most {MAX_COUNT})",
    )


def text(body: bytes) -> Parsed:
    """``b"1796133332.584 shop.example.com 200"`` -> ``(1796133332, b"shop.example.com")``."""
    # Any run of blanks separates fields (rsyslog's RFC 5424 template puts a space
    # before the message), so split on whitespace: once, for the first two fields.
    parts = body.split(None, 2)
    if len(parts) < 2:
        raise no_host()
    stamp, host = parts[0], parts[1]
    seconds, dot, fraction = stamp.partition(b".")
    if (
        not seconds.isdigit()
        or len(seconds) > _MAX_DIGITS
        or (dot and fraction and not fraction.isdigit())
    ):
        raise bad_timestamp()
    ts = int(seconds)
    if ts > MAX_COUNT:
        raise bad_timestamp()
    # "-" is how all three servers write a missing value (no Host header).
    if host == b"-":
        raise no_host()
    return ts, host


class _Request(msgspec.Struct):
    host: str


class _CaddyLine(msgspec.Struct):
    ts: float
    request: _Request


_caddy_decoder = msgspec.json.Decoder(_CaddyLine)


def caddy(body: bytes) -> Parsed:
    """A Caddy JSON access-log object -> ``(floor(ts), request.host)``."""
    try:
        line = _caddy_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise FormatError(
            "json",
            'not a Caddy JSON access log (expected {"ts": <unix seconds>, '
            '"request": {"host": "..."}, ...})',
        ) from None
    ts = line.ts
    if not math.isfinite(ts) or not 0 <= ts <= MAX_COUNT:
        raise bad_timestamp()
    if not line.request.host:
        raise no_host()
    # surrogatepass: a lone surrogate escape survives here and is refused as
    # invalid UTF-8 with the other host rules, not as a crash.
    return int(ts), line.request.host.encode("utf-8", "surrogatepass")


FORMATS: dict[str, Parser] = {
    "text": text,
    "nginx": text,
    "haproxy": text,
    "apache": text,
    "caddy": caddy,
}
"""Every format by name."""


def guess(body: bytes) -> Parser:
    """The parser for a body of unknown format: JSON objects are Caddy's, the rest text."""
    return caddy if body[:1] == b"{" else text


# -- the common log format's time: [10/Oct/2000:13:55:36 -0700] -----------------

_MONTHS = {
    name.encode(): number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_CLF_TIME = re.compile(rb"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_HAPROXY_TIME = re.compile(rb"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d)")
_CACHE_LIMIT = 4096


class _TimeCache:
    """Raw time strings to Unix seconds, converted once per distinct string.

    Consecutive lines share their second, so nearly every lookup is a hit. The
    cache is dropped whole when it reaches ``_CACHE_LIMIT`` entries, which bounds
    it whatever the input. Only valid strings are kept.
    """

    def __init__(self, convert: Callable[[bytes], int]) -> None:
        self._convert = convert
        self._seconds: dict[bytes, int] = {}

    def __call__(self, raw: bytes) -> int:
        seconds = self._seconds.get(raw)
        if seconds is None:
            seconds = self._convert(raw)
            if len(self._seconds) >= _CACHE_LIMIT:
                self._seconds.clear()
            self._seconds[raw] = seconds
        return seconds


def _no_host_field() -> FormatError:
    return FormatError("no_host", "no host where the format has it (a '-' is no host either)")


def _bad_time(what: str) -> FormatError:
    return FormatError("timestamp", f"the time is not {what}")


def _fields(match: re.Match[bytes] | None, what: str) -> tuple[int, int, int, int, int, int]:
    if match is None:
        raise _bad_time(what)
    day, month, year, hour, minute, second = match.group(1, 2, 3, 4, 5, 6)
    number = _MONTHS.get(month)
    if number is None:
        raise _bad_time(what)
    try:
        # datetime checks the calendar (no 31 Feb, no hour 24) that timegm would roll over.
        dt.datetime(int(year), number, int(day), int(hour), int(minute), int(second))
    except ValueError:
        raise _bad_time(what) from None
    return int(year), number, int(day), int(hour), int(minute), int(second)


_CLF = "a common log format time such as 10/Oct/2000:13:55:36 -0700"


def _clf_seconds(raw: bytes) -> int:
    match = _CLF_TIME.fullmatch(raw)
    fields = _fields(match, _CLF)
    assert match is not None
    sign, hours, minutes = match.group(7, 8, 9)
    offset = (int(hours) * 3600 + int(minutes) * 60) * (-1 if sign == b"-" else 1)
    seconds = calendar.timegm((*fields, 0, 0, 0)) - offset
    if not 0 <= seconds <= MAX_COUNT:
        raise _bad_time(_CLF + " from 1970 on")
    return seconds


_HAPROXY = "an HAProxy date such as 06/Feb/2009:12:14:14.655"


def _local_seconds(raw: bytes) -> int:
    fields = _fields(_HAPROXY_TIME.fullmatch(raw), _HAPROXY)
    seconds = int(time.mktime((*fields, 0, 0, -1)))
    if not 0 <= seconds <= MAX_COUNT:
        raise _bad_time(_HAPROXY + " from 1970 on")
    return seconds


_clf_time = _TimeCache(_clf_seconds)
_haproxy_time = _TimeCache(_local_seconds)


def _fields_error(fmt: str) -> FormatError:
    return FormatError("fields", f"not in the {fmt} format (expected {_EXPECTED[fmt]})")


_EXPECTED = {
    "nginx-vhost": '<host> <addr> - <user> [10/Oct/2000:13:55:36 -0700] "<request>" ...',
    "combined-vhost": '<host>:<port> <addr> <ident> <user> [10/Oct/2000:13:55:36 -0700] "..." ...',
    "haproxy": "... <client>:<port> [06/Feb/2009:12:14:14.655] ... {<host>|...} ...",
}


# -- nginx: '$host $remote_addr - $remote_user [$time_local] "$request" ...' ----


def nginx_vhost(line: bytes) -> Parsed:
    """``b'a.com 10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" ...'``
    -> ``(971211336, b"a.com")``."""
    space = line.find(b" ")
    start = line.find(b" [", space)
    end = line.find(b"]", start)
    if space < 0 or start < 0 or end < 0:
        raise _fields_error("nginx-vhost")
    if space == 0 or (space == 1 and line[0] == 45):  # 45 is "-"
        raise _no_host_field()
    return _clf_time(line[start + 2 : end]), line[:space]


# -- Apache: '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"' ------


def combined_vhost(line: bytes) -> Parsed:
    """``b'a.com:80 10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" ...'``
    -> ``(971211336, b"a.com")``: the host without its port."""
    space = line.find(b" ")
    start = line.find(b" [", space)
    end = line.find(b"]", start)
    if space < 0 or start < 0 or end < 0:
        raise _fields_error("combined-vhost")
    host = line[:space]
    colon = host.rfind(b":")
    if colon >= 0 and host[colon + 1 :].isdigit():
        host = host[:colon]
    if not host or host == b"-":
        raise _no_host_field()
    return _clf_time(line[start + 2 : end]), host


# -- HAProxy: option httplog, with "capture request header Host len 255" first ----


def haproxy_httplog(line: bytes) -> Parsed:
    """``b'... 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in ... {a.com} ... "GET / ..."'``
    -> ``(seconds in local time, b"a.com")``.

    The date is the first ``[dd/...]`` that follows a space (a syslog header's
    ``haproxy[123]:`` does not), and the host the first field of the first
    ``{...}`` after it, before the request's opening quote.
    """
    start = line.find(b" [")
    # The date follows "<client>:<port> "; skip any other " [" before it (an
    # RFC 5424 header's structured data, say): a date has "dd/" after the bracket.
    while start >= 0 and line[start + 4 : start + 5] != b"/":
        start = line.find(b" [", start + 2)
    end = line.find(b"]", start) if start >= 0 else -1
    brace = line.find(b" {", end)
    quote = line.find(b'"', end)
    if end < 0 or brace < 0 or (0 <= quote < brace):
        raise _fields_error("haproxy")
    close = line.find(b"}", brace)
    if close < 0:
        raise _fields_error("haproxy")
    host = line[brace + 2 : close]
    bar = host.find(b"|")
    if bar >= 0:
        host = host[:bar]
    if not host or host == b"-":
        raise _no_host_field()
    stamp = line[start + 2 : end]
    dot = stamp.find(b".")
    if dot >= 0:
        if not stamp[dot + 1 :].isdigit():
            raise _bad_time(_HAPROXY)
        stamp = stamp[:dot]
    return _haproxy_time(stamp), host


LOG_FILE_FORMATS: dict[str, Parser] = {
    "nginx-vhost": nginx_vhost,
    "combined-vhost": combined_vhost,
    "haproxy": haproxy_httplog,
    "caddy-json": caddy,
    "tophosts": text,
}
"""The line formats of ``tophosts tail --format``, by name."""
