"""The syslog receiver: its listeners, flusher and metrics, started and stopped together.

``async with Receiver(...)`` binds every ``--syslog`` listener in the running
event loop (the HTTP server's), flushes into the store while inside, and on
the way out stops listening, reads what the kernel still holds for it (until
the sockets are quiet, half a second at most), closes the TCP connections and
applies everything received in a final flush, before the caller goes on to
its last snapshot and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from types import TracebackType

from prometheus_client import CollectorRegistry

from tophosts import background
from tophosts.config import Settings
from tophosts.metrics import Metrics
from tophosts.store import Clock, Store
from tophosts.syslog import drops, sockets
from tophosts.syslog.address import Address, parse_all
from tophosts.syslog.aggregate import INTERVAL, MAX_PENDING, Flusher, Pending
from tophosts.syslog.counts import Tally
from tophosts.syslog.lines import Reader
from tophosts.syslog.metrics import Mirror, SyslogCollector
from tophosts.syslog.tcp import TcpProtocol
from tophosts.syslog.udp import UdpProtocol

log = logging.getLogger("tophosts.syslog")

DRAIN = 0.5
"""Seconds at most spent at shutdown reading what the sockets still hold."""
_MIRROR_EVERY = 1.0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Receiver:
    def __init__(
        self,
        listeners: str,
        store: Store,
        clock: Clock,
        *,
        registry: CollectorRegistry | None = None,
        multiprocess: bool = False,
        format: str = "auto",
        rcvbuf: int = 8 * 1024 * 1024,
        idle_timeout: float = 600.0,
        max_skew: int = 300,
        reuse_port: bool = False,
        interval: float = INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.addresses: list[Address] = parse_all(listeners)
        self.reader = Reader(format)
        self.rcvbuf = rcvbuf
        self.idle_timeout = idle_timeout
        self.reuse_port = reuse_port
        self.tallies = [Tally(str(a)) for a in self.addresses]
        self.pendings = [Pending(t, max_pending) for t in self.tallies]
        self.flusher = Flusher(store, clock, max_skew, self.pendings, interval)
        self.registry = registry
        self.collector = SyslogCollector(self.tallies)
        self.mirror = Mirror(self.tallies) if multiprocess else None
        self._stack = contextlib.AsyncExitStack()
        self._udp: list[tuple[asyncio.DatagramTransport, UdpProtocol]] = []
        self._servers: list[asyncio.Server] = []
        self._connections: list[set[TcpProtocol]] = []

    @classmethod
    def for_settings(
        cls, settings: Settings, store: Store, clock: Clock, metrics: Metrics
    ) -> Receiver:
        """The receiver that ``settings`` ask for, with its metrics on ``metrics``' registry."""
        return cls(
            settings.syslog,
            store,
            clock,
            registry=metrics.registry,
            multiprocess=metrics.multiprocess,
            format=settings.syslog_format,
            rcvbuf=settings.syslog_rcvbuf,
            idle_timeout=settings.syslog_idle_timeout,
            max_skew=settings.max_skew,
            reuse_port=settings.workers > 1,
        )

    async def __aenter__(self) -> Receiver:
        loop = asyncio.get_running_loop()
        try:
            for address, pending in zip(self.addresses, self.pendings, strict=True):
                sock = sockets.bind(address, self.reuse_port)
                if address.transport == "udp":
                    await self._start_udp(loop, sock, pending)
                else:
                    await self._start_tcp(loop, sock, pending)
                log.info("syslog: listening on %s (format %s)", address, self.reader.name)
                if not _loopback(address.host):
                    log.warning(
                        "syslog %s: syslog has no authentication, so anyone who can reach "
                        "this address can add counts; listen on a loopback or private address, "
                        "or keep it behind a firewall",
                        address,
                    )
        except BaseException:
            await self._close_listeners()
            raise
        # The stack unwinds in reverse: the final flush, then the last metrics update.
        if self.mirror is not None:
            self._stack.callback(self.mirror.update)
            mirroring = background.every(_MIRROR_EVERY, self.mirror.update, final=False)
            await self._stack.enter_async_context(mirroring)
        elif self.registry is not None:
            self.registry.register(self.collector)
            self._stack.callback(self.registry.unregister, self.collector)
        await self._stack.enter_async_context(self.flusher.running())
        return self

    async def _start_udp(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, pending: Pending
    ) -> None:
        tally = pending.tally
        tally.rcvbuf = sockets.receive_buffer(sock, self.rcvbuf, tally.name)
        tally.drops_of.append(drops.inode(sock))
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.reader, pending), sock=sock
        )
        self._udp.append((transport, protocol))

    async def _start_tcp(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, pending: Pending
    ) -> None:
        connections: set[TcpProtocol] = set()
        server = await loop.create_server(
            lambda: TcpProtocol(self.reader, pending, self.idle_timeout, connections), sock=sock
        )
        self._servers.append(server)
        self._connections.append(connections)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self._servers:
            server.close()  # no new connections; the open ones drain below
        await self._drain()
        await self._close_listeners()
        # The flusher stops after a final flush of everything received.
        await self._stack.aclose()
        for tally in self.tallies:
            tally.stopped()

    async def _drain(self) -> None:
        """Keep reading until a pass of the loop brings nothing new, ``DRAIN`` s at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN

        def seen() -> int:
            return sum(p.datagrams for _, p in self._udp) + sum(
                c.chunks for conns in self._connections for c in conns
            )

        before = seen()
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            now = seen()
            if now == before:
                return
            before = now

    async def _close_listeners(self) -> None:
        for transport, udp in self._udp:
            transport.close()
            udp.tally.received += udp.datagrams
        waiting = []
        for connections in self._connections:
            for protocol in list(connections):
                if protocol.transport is not None:
                    protocol.transport.close()
                waiting.append(protocol.closed)
        for server in self._servers:
            server.close()
        if waiting:
            await asyncio.wait(waiting, timeout=5)
        for server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._servers.clear()
