"""One syslog line in, ``(seconds, host)`` out: the header, then the body's format.

The format is ``--syslog-format`` when it names one; with ``auto`` (the
default) it is the syslog tag's when the tag names a server (``nginx``,
``haproxy``, ``apache``, ``httpd``, ``caddy``), and otherwise it follows from
the body: a JSON object is Caddy's, anything else the ``text`` format.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tophosts import formats
from tophosts.events import MAX_COUNT
from tophosts.formats import FormatError, Parsed, Parser
from tophosts.syslog.header import HeaderError, split

LineError = (HeaderError, FormatError)
"""What :meth:`Reader.read` raises: each has a ``reason`` (a short word) and a message."""

FORMAT_NAMES = ("auto", *formats.FORMATS)
_BY_TAG: dict[bytes, Parser] = {
    b"nginx": formats.text,
    b"haproxy": formats.text,
    b"apache": formats.text,
    b"httpd": formats.text,
    b"caddy": formats.caddy,
}


Key = tuple[int | bytes, bytes]
"""What the listeners sum lines by: ``(second, host as sent)``, the second as an int,
or as the digits the fast path matched (:meth:`Reader.match`), made an int (and
checked against ``MAX_COUNT``) once per distinct key at flush, by :func:`second`."""


def second(key: Key) -> int | None:
    """The second of ``key``, or None when its digits are past ``MAX_COUNT``."""
    seconds = key[0]
    if isinstance(seconds, int):
        return seconds
    ts = int(seconds)
    return ts if ts <= MAX_COUNT else None


class Reader:
    """Reads lines in the format ``name`` (one of :data:`FORMAT_NAMES`).

    The listeners first try :attr:`match`, one regular expression for the
    common line (an RFC 3164 header with a tag, and a text body), whose
    ``groups()`` are a :data:`Key` as they stand: nothing else is done per line.
    What it does not match goes the careful way (:meth:`careful`:
    :func:`header.split`, then the format's parser), which gives every error.
    Where the fast path answers, it answers what the careful way would: a
    hypothesis test and the fuzz harness of the header hold it to that.
    """

    def __init__(self, name: str = "auto") -> None:
        if name not in FORMAT_NAMES:
            raise ValueError(f"unknown format {name!r}; use one of {', '.join(FORMAT_NAMES)}")
        self.name = name
        self._parser = formats.FORMATS.get(name, formats.text)
        # The fast path reads text bodies; with "auto", only under a tag that is not caddy.
        if name == "auto":
            self.match = _FAST_AUTO
        elif self._parser is formats.text:
            self.match = _FAST_TEXT
        else:
            self.match = _NEVER

    def read(self, line: bytes) -> Parsed:
        """``(second, host)`` of one line; raises one of :data:`LineError`."""
        found = self.fast(line)
        return found if found is not None else self.careful(line)

    def fast(self, line: bytes) -> Parsed | None:
        """The fast path's answer, or None where :meth:`careful` has to read the line
        (or where the fast path's key would be refused at flush: a second past
        ``MAX_COUNT``, which the careful way refuses too)."""
        match = self.match(line)
        if match is None:
            return None
        digits, host = match.group(1, 2)
        ts = second((digits, host))
        return None if ts is None else (ts, host)

    def careful(self, line: bytes) -> Parsed:
        """The answer of :meth:`read`, the long way: the header, then the format."""
        if line[-1:] in b"\r\n":
            line = line.rstrip(b"\r\n")
        tag, body = split(line)
        if self.name != "auto":
            return self._parser(body)
        parser = _BY_TAG.get(tag)
        if parser is None:
            parser = formats.caddy if body[:1] == b"{" else formats.text
        return parser(body)


_BLANK = rb"\t\n\r\x0b\x0c "  # what bytes.split() splits on


def _fast_line(tag: bytes) -> Callable[[bytes], re.Match[bytes] | None]:
    """The common line, in one match: ``<PRI>[Mmm dd hh:mm:ss ][HOST ]TAG[[PID]]: <seconds>
    [.fraction] <host>...``, where the tag must pass the lookahead ``tag``, and the
    host is not ``-`` (the servers' word for no Host header)."""
    return re.compile(
        rb"<(?:1[0-8][0-9]|19[01]|[0-9][0-9]?)>(?!1 )"  # PRI up to 191; not RFC 5424
        rb"(?:[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] )?"
        rb"(?:[^ :]+ )?" + tag + rb"[^ :\[]+(?:\[[0-9]*\])?: "
        rb"[ \t]*([0-9]{1,16})(?:\.[0-9]*)?[ \t]+"
        rb"(?!-(?:[" + _BLANK + rb"]|$))([^" + _BLANK + rb"]+)"
    ).match


# With "auto", a tag "caddy" means Caddy's format: those lines go the careful way.
_FAST_AUTO = _fast_line(rb"(?!caddy)")
_FAST_TEXT = _fast_line(b"")
_NEVER = re.compile(rb"(?!)").match
