"""The syslog header: RFC 3164 or RFC 5424 in, the tag and the body out. Pure.

RFC 3164 (BSD), as nginx, HAProxy and ``logger --rfc3164`` send it::

    <190>Dec  1 13:55:32 vm nginx: 1796133332.584 shop.example.com
    <134>Dec  1 14:14:50 haproxy[27574]: 1796134490.754 shop.example

The timestamp is optional here (some senders omit it), and so is the hostname
(HAProxy omits it). The tag is the word ending in ``:`` after them, without a
``[pid]``.

RFC 5424, as rsyslog's ``RSYSLOG_SyslogProtocol23Format`` and ``logger`` send it::

    <13>1 2026-12-01T13:55:32.584+00:00 vm apache 42 - [timeQuality tzKnown="1"] 1796... a.com

The tag is the APP-NAME; the body follows the structured data (and a BOM, if any).

A line that does not start with ``<`` has no header at all (Caddy's JSON): it is
all body, with an empty tag. The header's own time is never used: RFC 3164's
has no year and no zone, and the body's time is the request's.
"""

from __future__ import annotations

import re


class HeaderError(ValueError):
    """A line whose syslog header cannot be read; ``reason`` is ``"header"``."""

    reason = "header"


# Texts, not instances: a kept exception raised again and again would grow its
# traceback (and keep the frames in it) at every raise.
_BAD_PRI = "the line starts with '<' but not with a priority such as <134>"
_BAD_5424 = (
    "an RFC 5424 header needs VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA"
)
_BAD_SD = "the RFC 5424 structured data is not closed by ']' within 8 KiB"
MAX_STRUCTURED_DATA = 8 * 1024
"""Longest structured data read: an access-log line needs none, and a cap keeps a
hostile line's cost small."""
_MONTHS = frozenset(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
)
_BOM = b"\xef\xbb\xbf"


def split(line: bytes) -> tuple[bytes, bytes]:
    """``(tag, body)`` of one syslog line; raises :class:`HeaderError`."""
    if line[:1] != b"<":
        return b"", line
    end = line.find(b">", 1, 5)
    pri = line[1:end]
    if end < 2 or not pri.isdigit() or (len(pri) == 3 and pri > b"191"):
        raise HeaderError(_BAD_PRI)
    if line[end + 1 : end + 3] == b"1 ":
        return _rfc5424(line, end + 3)
    # The common case, written flat: "...[HOSTNAME ]TAG[[PID]]: BODY".
    colon = line.find(b": ", end)
    if colon > 0:
        space = line.rfind(b" ", end, colon)
        tag = line[(space if space > 0 else end) + 1 : colon]
        if tag:
            bracket = tag.find(b"[")
            return (tag if bracket < 0 else tag[:bracket]), line[colon + 2 :]
    return _rfc3164(line, end + 1)


def _rfc3164(line: bytes, pos: int) -> tuple[bytes, bytes]:
    # "Mmm dd hh:mm:ss " (the day padded with a space): skip it when it is there.
    if line[pos + 15 : pos + 16] == b" " and line[pos : pos + 3] in _MONTHS:
        pos += 16
    start = pos
    # HOSTNAME? TAG: -- neither holds a space, and the tag's word ends in ':'.
    for _ in range(2):
        space = line.find(b" ", pos)
        word_end = len(line) if space < 0 else space
        if word_end > pos and line[word_end - 1] == 0x3A:  # ':'
            tag = line[pos : word_end - 1]
            bracket = tag.find(b"[")
            if bracket >= 0:
                tag = tag[:bracket]
            return tag, line[word_end + 1 :]
        if space < 0:
            break
        pos = space + 1
    # No tag: the body is everything after the timestamp.
    return b"", line[start:]


def _rfc5424(line: bytes, pos: int) -> tuple[bytes, bytes]:
    # TIMESTAMP HOSTNAME APP-NAME PROCID MSGID: five words, then the structured data.
    fields = line[pos:].split(b" ", 5)
    if len(fields) < 6:
        raise HeaderError(_BAD_5424)
    tag, rest = fields[2], fields[5]
    if rest == b"-" or rest[:2] == b"- ":
        body = rest[2:]
    elif rest[:1] == b"[":
        body = _after_structured_data(rest)
    else:
        raise HeaderError(_BAD_5424)
    if body[:3] == _BOM:
        body = body[3:]
    return (b"" if tag == b"-" else tag), body


# One or more SD-ELEMENTs: "[" ID *(SP NAME="VALUE") "]", where a VALUE may escape
# any byte with a backslash (RFC 5424 names \", \\ and \]). Each alternative starts
# with a different byte and the quantifiers are possessive (no backtracking): the
# match is linear in the line, and in runs of plain bytes, not byte by byte.
_STRUCTURED_DATA = re.compile(rb'(?:\[(?:[^\]"]++|"(?:[^"\\]++|\\.)*+")*+\])++', re.S)


def _after_structured_data(rest: bytes) -> bytes:
    """What follows the structured data that starts ``rest``."""
    match = _STRUCTURED_DATA.match(rest, 0, MAX_STRUCTURED_DATA)
    if match is None:
        raise HeaderError(_BAD_SD)
    end = match.end()
    if end < len(rest):
        if rest[end] != 0x20:
            raise HeaderError(_BAD_SD)
        end += 1
    return rest[end:]
