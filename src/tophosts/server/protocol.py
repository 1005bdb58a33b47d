"""uvicorn's httptools protocol with request-read timeouts and load shedding.

- uvicorn times out idle keep-alive connections, but not a client that opens a
  connection and then trickles its request a byte at a time: that connection
  would be held forever. Here a request must finish its headers within
  ``header_timeout`` seconds of its first byte (or of the connection opening),
  and its body within ``body_timeout`` seconds of its headers, or it is answered
  408 and the connection closed. A sweep once a second finds such requests, so
  the request path pays for a clock reading, not for a timer.
- With ``max_in_flight``, a request that arrives while that many are already
  being served is answered 503 with ``Retry-After`` by ``shed`` instead of being
  queued: under overload the server answers quickly, keeps its memory bounded
  and serves what it can. uvicorn's own ``--limit-concurrency`` also counts
  idle keep-alive connections, so a crowd of idle clients would turn everyone
  away, and it answers in plain text.

The settings are class attributes, set by :func:`configure` in each server
process, because uvicorn hands the class by name to its worker processes.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tophosts.asgi import ASGIApp

_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_TOO_SLOW = b'{"error":"the request %s did not arrive within %g s (%s)"}'
SWEEP_EVERY = 1.0


class _Count:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


IN_FLIGHT = _Count()
"""Admitted requests not yet answered, over every connection of this process.

Not a class attribute of :class:`Protocol`: assigning one invalidates CPython's
type attribute cache, and then every attribute lookup on every protocol object
walks the MRO again. Bumped twice per request, that cost a third of the
server's instructions per request (callgrind: 178k against 119k).
"""


class Protocol(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_in_flight: ClassVar[int] = 0
    shed: ClassVar[ASGIApp | None] = None
    _sweeping: ClassVar[set[Protocol]] = set()
    _sweeper: ClassVar[asyncio.TimerHandle | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_since: float | None = None
        self._headers_done = False
        # One flag per request of this connection not yet answered, oldest first
        # (more than one only when requests are pipelined): was it admitted?
        self._admitted: collections.deque[bool] = collections.deque()

    # -- timeouts ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading_since = self.loop.time()
        self._headers_done = False
        Protocol._sweeping.add(self)
        if Protocol._sweeper is None:
            Protocol._sweeper = self.loop.call_later(SWEEP_EVERY, _sweep, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        Protocol._sweeping.discard(self)
        IN_FLIGHT.n -= sum(self._admitted)
        self._admitted.clear()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_since = self.loop.time()
        self._headers_done = False

    def on_message_complete(self) -> None:
        self._reading_since = None
        super().on_message_complete()

    def _too_slow(self, now: float) -> bool:
        since = self._reading_since
        if since is None or self.transport.is_closing():
            return False
        if self._headers_done:
            late, what, setting = now - since > self.body_timeout, b"body", b"--body-timeout"
            limit = self.body_timeout
        else:
            late, what, setting = now - since > self.header_timeout, b"headers", b"--header-timeout"
            limit = self.header_timeout
        if not late:
            return False
        if self.cycle is None or not self.cycle.response_started:
            body = _TOO_SLOW % (what, limit, setting)
            self.transport.write(_TIMEOUT % (len(body), body))
        self.transport.close()
        return True

    # -- shedding ---------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._reading_since = self.loop.time()
        shed = Protocol.shed
        # Only admitted requests count: the cheap 503s must not crowd out the
        # requests the server can still serve.
        if shed is None or not self.max_in_flight or IN_FLIGHT.n < self.max_in_flight:
            IN_FLIGHT.n += 1
            self._admitted.append(True)
            super().on_headers_complete()
            return
        self._admitted.append(False)
        app, self.app = self.app, shed
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_response_complete(self) -> None:
        if self._admitted and self._admitted.popleft():
            IN_FLIGHT.n -= 1
        super().on_response_complete()


def _sweep(loop: asyncio.AbstractEventLoop) -> None:
    now = loop.time()
    for protocol in list(Protocol._sweeping):
        protocol._too_slow(now)
    Protocol._sweeper = loop.call_later(SWEEP_EVERY, _sweep, loop) if Protocol._sweeping else None


def configure(
    header_timeout: float, body_timeout: float, max_in_flight: int, shed: ASGIApp | None
) -> None:
    """Set the limits for every connection this process serves from now on."""
    Protocol.header_timeout = header_timeout
    Protocol.body_timeout = body_timeout
    Protocol.max_in_flight = max_in_flight
    Protocol.shed = shed
