"""The TCP listener: newline-delimited or octet-counted frames (RFC 6587) per connection.

A connection whose stream cannot be framed (garbage, or a frame over 64 KiB)
is closed, and so is one idle for ``idle_timeout`` seconds; the reason is
counted. A connection stops reading while its listener's table is full, until
the next flush: TCP senders are slowed down, never refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from tophosts.syslog.aggregate import Pending
from tophosts.syslog.bulk import Bulk
from tophosts.syslog.framing import Framer
from tophosts.syslog.lines import Reader

log = logging.getLogger("tophosts.syslog")

MAX_CONNECTIONS = 1024
"""Open connections per listener; one more is closed at once (``too_many_connections``)."""


class TcpProtocol(asyncio.Protocol):
    def __init__(
        self,
        reader: Reader,
        pending: Pending,
        idle_timeout: float,
        open_: set[TcpProtocol],
    ) -> None:
        self.match = reader.match
        self.careful = reader.careful
        self.bulk = Bulk(reader.name).read
        self.pending = pending
        self.limit = pending.limit
        self.tally = pending.tally
        self.idle_timeout = idle_timeout
        self.open = open_
        self.framer = Framer()
        self.chunks = 0
        self.lines = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        if len(self.open) >= MAX_CONNECTIONS:
            self.tally.close(
                "too_many_connections", f"{MAX_CONNECTIONS} connections are open already"
            )
            transport.abort()
            return
        self.open.add(self)
        self.tally.connections += 1
        self._timer = self._loop.call_later(self.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self.chunks += 1
        self._last = self._loop.time()
        framer, pending, tally = self.framer, self.pending, self.tally
        frames = framer.feed(data)
        self.lines += len(frames)
        if frames:
            try:
                reads, others = self.bulk(frames)
            except Exception:  # a bug there must not lose the chunk: read it line by line
                log.exception("syslog %s: the bulk read failed", tally.name)
                reads, others = [], frames
            if reads:
                # Every line of this chunk counts, past the bound too (a bounded
                # overshoot); the connection then reads no more until the flush.
                pending.add_reads(reads, bounded=False)
            for frame in others:
                self._one(frame)
        error = framer.error
        transport = self.transport
        assert transport is not None
        if error is not None:
            self.lines += 1
            tally.bad("unparsed", error.reason, 1, error.detail, data[:200])
            tally.close(error.reason, error.detail)
            transport.abort()
        elif pending.size >= self.limit and not transport.is_closing():
            transport.pause_reading()
            pending.paused.add(transport)
            pending.full.set()

    def _one(self, frame: bytes) -> None:
        if not frame or frame == b"\r":  # an empty line between frames: not a line
            self.lines -= 1
            return
        found = self.match(frame)
        if found is not None:
            digits: bytes = found[1]
            host: bytes = found[2]
            self.pending.add(digits, host, 1)
            return
        parsed = self.tally.parsed(self.careful, frame, "a frame")
        if parsed is not None:
            second, host = parsed
            self.pending.add(second, host, 1)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        rest = self.framer.close()
        if rest.strip():
            self.lines += 1
            self.tally.bad(
                "unparsed",
                "truncated",
                1,
                "the connection ended in the middle of a frame",
                rest[:200],
            )
        self.tally.received += self.lines
        if self in self.open:
            self.open.discard(self)
            self.tally.connections -= 1
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.pending.paused.discard(self.transport)
        if not self.closed.done():
            self.closed.set_result(None)

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last
        if idle < self.idle_timeout:
            self._timer = self._loop.call_later(self.idle_timeout - idle, self._check_idle)
            return
        assert self.transport is not None
        self.tally.close(
            "idle", f"nothing received for {self.idle_timeout:g} s (--syslog-idle-timeout)"
        )
        self.transport.close()
