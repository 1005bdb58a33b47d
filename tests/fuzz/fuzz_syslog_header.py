"""Fuzz the syslog header (``header.split``) and the whole line reader (``Reader``).

``split`` gives ``(tag, body)`` with the body a tail of the line and a tag
without blanks, or raises ``HeaderError``. ``Reader.read`` gives ``(second,
host)`` in range, or raises one of ``LineError``; where its fast path answers,
the careful way (header, then format) answers the same. The listeners' bulk
read (``Bulk.read``, then its checks at flush) counts the input, and the input
cut into lines at each occurrence of its first byte, as the careful way does,
line by line, and so does a second read of the lines, which tries the second
of the last one read first. Anything else is a crasher.
"""

from __future__ import annotations

from tests.support.syslog import assert_as_careful
from tophosts.events import MAX_COUNT
from tophosts.syslog.bulk import Bulk
from tophosts.syslog.header import HeaderError, split
from tophosts.syslog.lines import LineError, Reader

NAMES = ("auto", "text", "caddy")
READERS = [Reader(name) for name in NAMES]


def TestOneInput(data: bytes) -> None:
    try:
        tag, body = split(data)
    except HeaderError:
        pass
    else:
        assert data.endswith(body)
        assert b" " not in tag
    for reader in READERS:
        fast = reader.fast(data)
        if fast is not None:
            assert reader.careful(data) == fast, (data, fast)
        try:
            second, host = reader.read(data)
        except LineError as exc:
            reason = exc.reason
        else:
            reason = ""
        if reason:
            continue
        assert 0 <= second <= MAX_COUNT
        assert host
        assert isinstance(host, bytes)
    lines: list[bytes] = data[1:].split(data[:1]) if data else [data]
    for name in NAMES:
        assert_as_careful(name, [data])
        bulk = Bulk(name)
        assert_as_careful(name, lines, bulk)
        assert_as_careful(name, lines, bulk)  # with the second of its last line read first
