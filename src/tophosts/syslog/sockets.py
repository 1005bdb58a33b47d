"""The listening sockets: bound, with ``SO_REUSEPORT`` under ``--workers``, and for UDP
the receive buffer asked for (and what the kernel granted)."""

from __future__ import annotations

import logging
import socket

from tophosts.syslog import drops
from tophosts.syslog.address import Address

log = logging.getLogger("tophosts.syslog")


def bind(address: Address, reuse_port: bool) -> socket.socket:
    """A bound, non-blocking socket for ``address`` (a TCP one is listening)."""
    kind = socket.SOCK_DGRAM if address.transport == "udp" else socket.SOCK_STREAM
    family, _, _, _, sockaddr = socket.getaddrinfo(address.host, address.port, type=kind)[0]
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Each worker binds its own socket to the address; the kernel spreads
            # senders (UDP: by source address and port) across them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on syslog {address}: {exc.strerror}") from None
    return sock


def receive_buffer(sock: socket.socket, wanted: int, name: str) -> int:
    """Ask for a receive buffer of ``wanted`` bytes; log and return what was granted.

    Linux caps ``SO_RCVBUF`` at ``net.core.rmem_max`` without a word (and then
    doubles the value for its own bookkeeping, which ``getsockopt`` shows: the
    figure here is halved back). A process with ``CAP_NET_ADMIN`` may pass the
    cap with ``SO_RCVBUFFORCE``, which is tried when the cap applied.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    forced = False
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if granted < wanted and force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, wanted)
        except PermissionError:
            pass
        else:
            granted, forced = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2, True
    if granted >= wanted:
        how = " (past net.core.rmem_max, with CAP_NET_ADMIN)" if forced else ""
        log.info("syslog %s: receive buffer of %d bytes granted%s", name, granted, how)
    else:
        cap = drops.rmem_max()
        log.warning(
            "syslog %s: asked for a receive buffer of %d bytes (--syslog-rcvbuf), the kernel "
            "granted %d (net.core.rmem_max is %s); bursts past it are dropped and counted in "
            "tophosts_syslog_dropped_total: raise it with sysctl -w net.core.rmem_max=%d",
            name,
            wanted,
            granted,
            cap if cap is not None else "unknown",
            wanted,
        )
    return granted
