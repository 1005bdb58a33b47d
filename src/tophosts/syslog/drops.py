"""Kernel drops of UDP sockets, from the ``drops`` column of ``/proc/net/udp``.

Linux counts, per socket, the datagrams it threw away because the socket's
receive buffer was full (``sk_drops``). It hands that count to a reader in two
ways: ancillary data on every ``recvmsg`` (``SO_RXQ_OVFL``), which asyncio's
``DatagramProtocol`` never shows, or the last column of ``/proc/net/udp`` and
``/proc/net/udp6`` on the socket's line, found by its inode. This reads the
latter, at scrape time, which costs nothing on the receiving path.
"""

from __future__ import annotations

import os
import socket

_TABLES = ("/proc/net/udp", "/proc/net/udp6")


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def read(inodes: set[int], tables: tuple[str, ...] = _TABLES) -> dict[int, int]:
    """``{inode: drops}`` for those of ``inodes`` found (none where /proc is not Linux's)."""
    found: dict[int, int] = {}
    for path in tables:
        try:
            with open(path, "rb") as table:
                next(table, None)  # the column names
                for line in table:
                    fields = line.split()
                    if len(fields) >= 13 and int(fields[9]) in inodes:
                        found[int(fields[9])] = int(fields[12])
        except OSError:
            continue
    return found


def rmem_max() -> int | None:
    """``net.core.rmem_max``: the largest receive buffer an unprivileged socket may ask for."""
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
