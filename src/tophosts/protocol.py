"""uvicorn's httptools protocol with a header-read timeout.

uvicorn times out idle keep-alive connections, but not a client that opens a
connection and then trickles its request line and headers a byte at a time:
that connection would be held forever, and with ``--limit-concurrency`` a few
hundred of them would lock everybody else out. Here a request must finish its
headers within ``header_timeout`` seconds of its first byte (or of the
connection opening), or it gets 408 and the connection is closed. Slow bodies
are the app's to time out (see :func:`tophosts.ingest.read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_MESSAGE = b'{"error":"the request headers did not arrive within %g s (--header-timeout)"}'


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        body = _MESSAGE % self.header_timeout
        self.transport.write(_REQUEST_TIMEOUT % (len(body), body))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        # From here on an idle connection is uvicorn's --timeout-keep-alive to close.
        self._disarm()
        super().on_headers_complete()


def with_header_timeout(seconds: float) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with this header-read timeout."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": seconds})
