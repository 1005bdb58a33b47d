"""Fuzz the line parsers of ``tophosts tail --format`` (``tophosts.formats``).

The first byte picks the format, the rest is one log line. Only two outcomes
are allowed: ``(second, host)`` with the second in range and a non-empty host,
or the parser's own ``FormatError`` with one of its reasons.
"""

from __future__ import annotations

from tophosts.events import MAX_COUNT
from tophosts.formats import LOG_FILE_FORMATS, FormatError

NAMES = sorted(LOG_FILE_FORMATS)
REASONS = ("fields", "json", "no_host", "timestamp")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    parse = LOG_FILE_FORMATS[NAMES[data[0] % len(NAMES)]]
    try:
        second, host = parse(data[1:])
    except FormatError as exc:
        error: FormatError | None = exc
    else:
        error = None
    if error is not None:
        assert error.reason in REASONS, error.reason
        assert error.detail
        return
    assert isinstance(second, int)
    assert 0 <= second <= MAX_COUNT, second
    assert isinstance(host, bytes)
    assert host
