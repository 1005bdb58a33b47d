"""The UDP listener: one syslog message per datagram."""

from __future__ import annotations

import asyncio
import logging

from tophosts.syslog.aggregate import Pending
from tophosts.syslog.lines import Key, LineError, Reader

log = logging.getLogger("tophosts.syslog")


class UdpProtocol(asyncio.DatagramProtocol):
    """Reads each datagram and bumps its (second, host) in the listener's table.

    This is the hot path: a few microseconds per datagram, all in bytes.
    """

    def __init__(self, reader: Reader, pending: Pending) -> None:
        self.match = reader.match
        self.careful = reader.careful
        self.pending = pending
        self.table = pending.table
        self.limit = pending.limit
        self.tally = pending.tally
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.datagrams += 1
        match = self.match(data)
        key: Key
        if match is not None:
            key = match.groups()  # type: ignore[assignment]  # (digits, host): a Key
        else:
            try:
                key = self.careful(data)
            except LineError as exc:
                self.tally.bad("unparsed", exc.reason, 1, str(exc), data)
                return
            except Exception as exc:  # a parser bug must not close the listener
                log.exception("syslog %s: reading a datagram failed", self.tally.name)
                self.tally.bad("unparsed", "error", 1, repr(exc), data)
                return
        table = self.table
        n = table.get(key)
        if n is not None:
            table[key] = n + 1
        elif len(table) < self.limit:
            table[key] = 1
        else:
            self.pending.refuse_full(key)

    def error_received(self, exc: Exception) -> None:
        log.debug("syslog %s: %s", self.tally.name, exc)
