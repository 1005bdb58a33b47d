"""The UDP listener: one syslog message per datagram."""

from __future__ import annotations

import asyncio
import logging

from tophosts.syslog.aggregate import Pending
from tophosts.syslog.lines import LineError, Reader

log = logging.getLogger("tophosts.syslog")


class UdpProtocol(asyncio.DatagramProtocol):
    """Reads each datagram and bumps its (second, host) in the listener's table.

    This is the hot path: a few microseconds per datagram, all in bytes.
    """

    def __init__(self, reader: Reader, pending: Pending) -> None:
        self.match = reader.match
        self.careful = reader.careful
        self.pending = pending
        self.tally = pending.tally
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.datagrams += 1
        match = self.match(data)
        if match is not None:
            digits: bytes = match[1]
            host: bytes = match[2]
            self.pending.add_one(digits, host)
            return
        try:
            second, host = self.careful(data)
        except LineError as exc:
            self.tally.bad("unparsed", exc.reason, 1, str(exc), data)
            return
        except Exception as exc:  # a parser bug must not close the listener
            log.exception("syslog %s: reading a datagram failed", self.tally.name)
            self.tally.bad("unparsed", "error", 1, repr(exc), data)
            return
        self.pending.add_one(second, host)

    def error_received(self, exc: Exception) -> None:
        log.debug("syslog %s: %s", self.tally.name, exc)
