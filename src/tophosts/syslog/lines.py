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


class Reader:
    """Reads lines in the format ``name`` (one of :data:`FORMAT_NAMES`).

    :attr:`read` first tries :attr:`fast`, written flat for the common line (an
    RFC 3164 header with a tag, and a text body); what it does not take goes
    the careful way (:meth:`careful`: :func:`header.split`, then the format's
    parser), which gives every error. When the fast path answers, it answers
    what the careful way would: the fuzz harness of the header checks that.
    """

    def __init__(self, name: str = "auto") -> None:
        if name not in FORMAT_NAMES:
            raise ValueError(f"unknown format {name!r}; use one of {', '.join(FORMAT_NAMES)}")
        self.name = name
        self._parser = formats.FORMATS.get(name, formats.text)
        # The fast path reads text bodies; with "auto", only under a tag that is not caddy.
        use_fast = name == "auto" or self._parser is formats.text
        self._use_fast, self._caddy = use_fast, name == "auto"
        careful, caddy, fast = self.careful, self._caddy, _fast

        def read(line: bytes) -> Parsed:
            if use_fast:
                found = fast(line, caddy)
                if found is not None:
                    return found
            return careful(line)

        self.read: Callable[[bytes], Parsed] = read

    def fast(self, line: bytes) -> Parsed | None:
        """The fast path's answer, or None where :meth:`careful` has to read the line."""
        return _fast(line, self._caddy) if self._use_fast else None

    def careful(self, line: bytes) -> Parsed:
        """The answer of :attr:`read`, the long way: the header, then the format."""
        if line[-1:] in b"\r\n":
            line = line.rstrip(b"\r\n")
        tag, body = split(line)
        if self.name != "auto":
            return self._parser(body)
        parser = _BY_TAG.get(tag)
        if parser is None:
            parser = formats.caddy if body[:1] == b"{" else formats.text
        return parser(body)


def _fast_line(tag: bytes) -> re.Pattern[bytes]:
    """The common line, in one match: ``<PRI>[Mmm dd hh:mm:ss ][HOST ]TAG[[PID]]: <seconds>
    [.fraction] <host>...`` with ``tag`` a lookahead that the tag must pass."""
    return re.compile(
        rb"<(?:1[0-8][0-9]|19[01]|[0-9][0-9]?)>(?!1 )"  # PRI up to 191; not RFC 5424
        rb"(?:[A-Z][a-z][a-z] [ 0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9] )?"
        rb"(?:[^ :]+ )?" + tag + rb"[^ :\[]+(?:\[[0-9]*\])?: "
        rb"[ \t]*([0-9]{1,16})(?:\.[0-9]*)?[ \t]+([^ \t\n\r\x0b\x0c]+)"
    )


# With "auto", a tag "caddy" means Caddy's format: those lines go the careful way.
_FAST = {True: _fast_line(rb"(?!caddy)").match, False: _fast_line(b"").match}


def _fast(line: bytes, caddy: bool = False) -> Parsed | None:
    """``(second, host)`` of the common line, or None for :meth:`Reader.careful` to read."""
    match = _FAST[caddy](line)
    if match is None:
        return None
    seconds, host = match.groups()
    ts = int(seconds)
    return (ts, host) if ts <= MAX_COUNT and host != b"-" else None
