"""Fuzz the text access-log format (``formats.text``): ``(second, host)`` or ``FormatError``."""

from __future__ import annotations

from tophosts.events import MAX_COUNT
from tophosts.formats import FormatError, text


def TestOneInput(data: bytes) -> None:
    try:
        second, host = text(data)
    except FormatError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert reason in ("no_host", "timestamp")
        return
    assert 0 <= second <= MAX_COUNT
    assert host
    assert host != b"-"
    assert not any(c in host for c in b" \t\n\r\x0b\x0c")
    assert data.split()[1] == host
