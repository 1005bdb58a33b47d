"""Fuzz the syslog header (``header.split``) and the whole line reader (``Reader``).

``split`` gives ``(tag, body)`` with the body a tail of the line and a tag
without blanks, or raises ``HeaderError``. ``Reader.read`` gives ``(second,
host)`` in range, or raises one of ``LineError``; where its fast path answers,
the careful way (header, then format) answers the same. Anything else is a
crasher.
"""

from __future__ import annotations

from tophosts.events import MAX_COUNT
from tophosts.syslog.header import HeaderError, split
from tophosts.syslog.lines import LineError, Reader

READERS = [Reader(name) for name in ("auto", "text", "caddy")]


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
