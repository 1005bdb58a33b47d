"""Access-log line formats: one log message body in, ``(timestamp, host)`` out.

Pure and I/O-free, for the syslog receiver and for anything else that reads
access logs. A parser takes the body of one message as bytes and returns
``(seconds, host)``: the request's time, floored to an integer of Unix seconds,
and the host name exactly as the server wrote it, still as bytes (decoding and
the host rules are applied once per distinct host by the caller, see
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

:data:`FORMATS` names each one; ``nginx``, ``haproxy`` and ``apache`` are the
``text`` parser under the name of the server whose snippet writes it.
"""

from __future__ import annotations

import math
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
