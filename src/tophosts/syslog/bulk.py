"""Many lines read at once: the listeners' fast path, in a few passes of C.

A listener hands over what it received in one go (the datagrams of one
readable socket, or the frames of one TCP read). :meth:`Bulk.read` joins them
into one buffer, each line preceded by a NUL and followed by ``" :"`` (the
separator :data:`SEP`), and splits it with a precompiled regular expression:
each line the expression matches gives its seconds (the digits) and its host,
with no Python per line; every other line is handed back as it came, for the
listener's line-by-line way (:class:`~tophosts.syslog.lines.Reader`), which
counts and explains it exactly as before.

The expression (:data:`PATTERN`) reads the common line only: an RFC 3164 header
with its timestamp (two colons before the tag's ``": "``), a non-empty tag, and
a text body ``<seconds>[.<fraction>] <host>...``. Most lines of a batch carry
the same second, so a first pass uses the expression with the second of the
last lines read written in (:func:`_of_second`): it leaves out the seconds'
group and its digits class, the costliest part; the lines it does not read get
the general expression in a second pass.

The expressions are exact under conditions checked on the whole buffer first,
each a ``memchr``-speed pass:

* no line holds a blank other than the space (``\\t \\n \\r \\v \\f``), once one
  trailing ``\\n`` (HAProxy's) and one trailing ``\\r`` are dropped, as the careful
  way drops them; so that "a blank" is the space alone, and the long runs are
  single-byte exclusions (``[^:]``, ``[^ ]``), the fastest ``re`` has;
* with ``--syslog-format auto``, no line holds ``caddy:`` or ``caddy[``: a tag
  ``caddy`` means Caddy's JSON format.

A buffer that fails one is handed back whole. No match runs from one line into
the next (the separator's colon and space stop every run), and each starts at
a NUL; a NUL inside a line is not looked for beforehand, since it makes the
line give two pieces (two matches, or a match and a line handed back, or two
lines), unless one match takes it whole, as the careful way would read it. So
the number of pieces against the number of lines tells, and a batch with such a
line is handed back whole too.

Two checks of the careful way are left to the flush, once per distinct
(second, host) instead of once per line (:func:`~tophosts.syslog.lines.settle`):
at most 16 digits and at most ``MAX_COUNT`` for the seconds, and a host that is
not ``-``. The hypothesis tests and the header fuzzer hold the whole to what the
careful way answers, line by line.
"""

from __future__ import annotations

import functools
import re

SEP = b" :\0"
"""Between two lines: a space ends a host, a colon stops the header's runs, the NUL
starts the next line."""

_HEADER = (
    # <PRI> up to 191, then a month: an RFC 3164 timestamp (RFC 5424 has "1 " here).
    rb"\0<(?:19[01]|1[0-8][0-9]|[0-9][0-9]?)>[A-Z]"
    # The header up to its first ": ", with the timestamp's two colons before it; the
    # byte after each of those is neither a space (then that colon would be the first
    # ": ") nor the separator's NUL.
    rb"[^:]*+:[^ :\0][^:]*+:[^ :\0][^:]*+"
    # A non-empty tag (the word before the colon), then the body's blanks.
    rb"(?<! ): ++"
)
_BODY = (
    # An optional fraction, blanks; the host, which does not start with a colon (the
    # separator's, or a host's that goes the careful way).
    rb"\.?+[0-9]*+ ++([^ :][^ ]*+)"
    # The rest of the line, and the separator up to the next line's NUL.
    rb"[^\0]*+"
)
PATTERN = re.compile(_HEADER + rb"([0-9]++)" + _BODY)
"""One line of the buffer, its groups the seconds' digits and the host."""


@functools.lru_cache(maxsize=64)
def _of_second(digits: bytes) -> re.Pattern[bytes]:
    """:data:`PATTERN` for the lines whose seconds are ``digits``, its group the host."""
    return re.compile(_HEADER + re.escape(digits) + rb"(?![0-9])" + _BODY)


_FORBIDDEN = (0x09, 0x0B, 0x0C)  # tab, vertical tab, form feed: blanks, never in a line

Read = tuple[bytes | list[bytes], list[bytes]]
"""Lines read: ``(digits, hosts)``, all of the same second, or ``(digits of each, hosts)``."""


class Bulk:
    """The fast path for lines in the format ``name`` (one of ``lines.FORMAT_NAMES``)."""

    def __init__(self, name: str = "auto") -> None:
        # Caddy's JSON has no fast path; the text formats read the same lines.
        self.enabled = name != "caddy"
        self.auto = name == "auto"
        self.second: bytes | None = None
        """The seconds' digits of the last line read by the general expression."""

    def read(self, lines: list[bytes]) -> tuple[list[Read], list[bytes]]:
        """``(reads, others)``: the lines read, and every other line, in order (a
        line's trailing ``\\n`` or ``\\r`` may be gone: the careful way drops them)."""
        if not self.enabled or not lines:
            return [], lines
        buffer = SEP.join([b"", *lines, b""])
        if 0x0A in buffer:
            buffer = buffer.replace(b"\n" + SEP, SEP)
            if 0x0A in buffer:
                return [], lines
        if 0x0D in buffer:
            buffer = buffer.replace(b"\r" + SEP, SEP)
            if 0x0D in buffer:
                return [], lines
        for byte in _FORBIDDEN:
            if byte in buffer:
                return [], lines
        if self.auto and b"caddy" in buffer and (b"caddy:" in buffer or b"caddy[" in buffer):
            return [], lines
        reads: list[Read] = []
        left = len(lines)
        if self.second is not None:
            parts = _of_second(self.second).split(buffer)
            hosts = parts[1::2]
            pieces = _left(parts[::2])
            if len(hosts) + len(pieces) != left:
                return [], lines
            if hosts:
                reads.append((self.second, hosts))
            if not pieces:
                return reads, []
            buffer, left = SEP.join([b"", *pieces, b""]), len(pieces)
        parts = PATTERN.split(buffer)
        seconds, hosts = parts[1::3], parts[2::3]
        pieces = _left(parts[::3])
        if len(seconds) + len(pieces) != left:
            return [], lines
        if seconds:
            reads.append((seconds, hosts))
            self.second = seconds[-1]
        return reads, pieces


def _left(between: list[bytes]) -> list[bytes]:
    """The lines no match took, from what lies between the matches: ``" :"`` before
    the first line, NUL + line + ``" :"`` for each line left, and the last line's NUL."""
    rest = b"".join(between)
    if len(rest) == 3:
        return []
    return [piece[:-2] for piece in rest[2:-1].split(b"\0")[1:]]
