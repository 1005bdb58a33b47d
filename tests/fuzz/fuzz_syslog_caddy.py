"""Fuzz Caddy's JSON access-log format (``formats.caddy``): ``(second, host)`` or
``FormatError``."""

from __future__ import annotations

from tophosts.events import MAX_COUNT
from tophosts.formats import FormatError, caddy

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    try:
        second, host = caddy(data)
    except FormatError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        assert reason in ("json", "no_host", "timestamp")
        return
    assert 0 <= second <= MAX_COUNT
    assert host
    host.decode("utf-8")  # JSON text is UTF-8: a host that is not is a crasher
