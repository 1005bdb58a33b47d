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
from tophosts.syslog.framing import Framer
from tophosts.syslog.lines import Key, LineError, Reader

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
        self.pending = pending
        self.table = pending.table
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
        framer = self.framer
        match, careful, table, tally = self.match, self.careful, self.table, self.tally
        frames = framer.feed(data)
        self.lines += len(frames)
        for frame in frames:
            if not frame or frame == b"\r":
                self.lines -= 1
                continue
            found = match(frame)
            key: Key
            if found is not None:
                key = found.groups()  # type: ignore[assignment]  # (digits, host): a Key
            else:
                try:
                    key = careful(frame)
                except LineError as exc:
                    tally.bad("unparsed", exc.reason, 1, str(exc), frame)
                    continue
                except Exception as exc:  # a parser bug must not stall the connection
                    log.exception("syslog %s: reading a frame failed", tally.name)
                    tally.bad("unparsed", "error", 1, repr(exc), frame)
                    continue
            n = table.get(key)
            if n is not None:
                table[key] = n + 1
            elif len(table) < self.limit:
                table[key] = 1
            else:
                # Keep every line of this chunk (a bounded overshoot) and read no more.
                table[key] = 1
        error = framer.error
        transport = self.transport
        assert transport is not None
        if error is not None:
            self.lines += 1
            tally.bad("unparsed", error.reason, 1, error.detail, data[:200])
            tally.close(error.reason, error.detail)
            transport.abort()
        elif len(table) >= self.limit and not transport.is_closing():
            transport.pause_reading()
            self.pending.paused.add(transport)
            self.pending.full.set()

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
