"""One syslog line in, ``(seconds, host)`` out: the header, then the body's format.

The format is ``--syslog-format`` when it names one; with ``auto`` (the
default) it is the syslog tag's when the tag names a server (``nginx``,
``haproxy``, ``apache``, ``httpd``, ``caddy``), and otherwise it follows from
the body: a JSON object is Caddy's, anything else the ``text`` format.
"""

from __future__ import annotations

from tophosts import formats
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
    """Reads lines in the format ``name`` (one of :data:`FORMAT_NAMES`)."""

    def __init__(self, name: str = "auto") -> None:
        if name not in FORMAT_NAMES:
            raise ValueError(f"unknown format {name!r}; use one of {', '.join(FORMAT_NAMES)}")
        self.name = name
        self.read = self._auto if name == "auto" else self._forced
        self._parser = formats.FORMATS.get(name, formats.text)

    def _auto(self, line: bytes) -> Parsed:
        if line[-1:] in b"\r\n":
            line = line.rstrip(b"\r\n")
        tag, body = split(line)
        parser = _BY_TAG.get(tag)
        if parser is None:
            parser = formats.caddy if body[:1] == b"{" else formats.text
        return parser(body)

    def _forced(self, line: bytes) -> Parsed:
        if line[-1:] in b"\r\n":
            line = line.rstrip(b"\r\n")
        return self._parser(split(line)[1])
