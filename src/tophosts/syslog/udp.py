"""The UDP listener: one syslog message per datagram, read in batches.

This is the hot path. It is not an ``asyncio.DatagramProtocol``: the event
loop's datagram transport makes one Python call per datagram, with the
sender's address formatted into a string and a tuple each time, which costs
about three times what reading the datagram costs (5,204 against 1,685
instructions a datagram, ``bench/syslog_callgrind.py``). Instead, the loop only
says when the socket is readable (``add_reader``), and the listener reads up
to :data:`BATCH` datagrams with ``os.read`` (the address is never asked for),
then reads their lines all at once (:mod:`~tophosts.syslog.bulk`); only the
lines the bulk read leaves go line by line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from itertools import repeat

from tophosts.syslog.aggregate import Pending
from tophosts.syslog.bulk import Bulk
from tophosts.syslog.lines import Reader

log = logging.getLogger("tophosts.syslog")

BATCH = 128
"""Datagrams read per turn of the event loop at most: the work of one turn stays
bounded (about 0.2 ms of common lines, a few ms of lines that all go the careful
way), and the loop serves everything else in between."""
MAX_DATAGRAM = 65536
"""Bytes read per datagram: more than any UDP datagram holds, so none is cut short."""


class UdpListener:
    """Reads the datagrams of one bound socket and bumps their (second, host) in the
    listener's table."""

    def __init__(self, sock: socket.socket, reader: Reader, pending: Pending) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.match = reader.match
        self.careful = reader.careful
        self.bulk = Bulk(reader.name).read
        self.pending = pending
        self.tally = pending.tally
        self.datagrams = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        self.sock.close()

    def _readable(self) -> None:
        batch: list[bytes] = []
        try:
            # os.read until the socket is empty, BATCH times at most, in C: map calls
            # it, and list.extend keeps what came before the BlockingIOError.
            batch.extend(map(os.read, repeat(self.fd, BATCH), repeat(MAX_DATAGRAM, BATCH)))
        except BlockingIOError:
            pass
        except OSError as exc:  # an ICMP error reported on the socket, say: keep reading
            log.debug("syslog %s: %s", self.tally.name, exc)
        if batch:
            self.datagrams += len(batch)
            self.feed(batch)

    def feed(self, batch: list[bytes]) -> None:
        """Count the lines of ``batch``, one per datagram."""
        try:
            reads, others = self.bulk(batch)
        except Exception:  # a bug there must not lose the batch: read it line by line
            log.exception("syslog %s: the bulk read failed", self.tally.name)
            reads, others = [], batch
        if reads:
            self.pending.add_reads(reads)
        for data in others:
            self._one(data)

    def _one(self, data: bytes) -> None:
        match = self.match(data)
        if match is not None:
            digits: bytes = match[1]
            host: bytes = match[2]
            self.pending.add_one(digits, host)
            return
        parsed = self.tally.parsed(self.careful, data, "a datagram")
        if parsed is not None:
            second, host = parsed
            self.pending.add_one(second, host)
