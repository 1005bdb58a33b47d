"""One syslog line in, ``(seconds, host)`` out: the header, then the body's format.

The format is ``--syslog-format`` when it names one; with ``auto`` (the
default) it is the syslog tag's when the tag names a server (``nginx``,
``haproxy``, ``apache``, ``httpd``, ``caddy``), and otherwise it follows from
the body: a JSON object is Caddy's, anything else the ``text`` format.
"""

from __future__ import annotations

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


_MAX_DIGITS = len(str(MAX_COUNT))


def _fast(line: bytes, caddy_may_tag: bool = False) -> Parsed | None:
    """``(second, host)`` of ``<PRI>[TIMESTAMP ][HOST ]TAG: <seconds>[.frac] <host>...``,
    or None for anything else. ``caddy_may_tag``: leave lines whose header may hold
    the tag ``caddy`` to the careful way, which reads them as Caddy's."""
    if line[:1] != b"<":
        return None
    end = line.find(b">", 1, 5)
    colon = line.find(b": ", end)
    pri = line[1:end]
    if (
        colon < 0
        or end < 2
        or not pri.isdigit()
        or (len(pri) == 3 and pri > b"191")
        or line[end + 1 : end + 3] == b"1 "  # RFC 5424
        or line[colon - 1] == 0x20  # no tag before the colon
        or (caddy_may_tag and line.find(b"caddy", end, colon) >= 0)
    ):
        return None
    parts = line[colon + 2 :].split(None, 2)
    if len(parts) < 2:
        return None
    seconds, _, fraction = parts[0].partition(b".")
    host = parts[1]
    if (
        not seconds.isdigit()
        or len(seconds) > _MAX_DIGITS
        or (fraction and not fraction.isdigit())
        or host == b"-"
    ):
        return None
    ts = int(seconds)
    return (ts, host) if ts <= MAX_COUNT else None
