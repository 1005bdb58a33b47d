"""Listener addresses: ``udp://HOST:PORT`` and ``tcp://HOST:PORT``. Pure."""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

ACCEPTED = (
    "udp://HOST:PORT or tcp://HOST:PORT, such as udp://127.0.0.1:5514 or tcp://[::1]:5514 "
    "(PORT from 1 to 65535), comma-separated for several"
)
_URL = re.compile(r"(udp|tcp)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})")


class Address(NamedTuple):
    transport: str
    """``"udp"`` or ``"tcp"``."""
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def parse(url: str) -> Address:
    """One listener URL; raises ValueError saying what is accepted."""
    match = _URL.fullmatch(url.strip().lower())
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise ValueError(ACCEPTED)
    host = match.group(2)
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(ACCEPTED) from None
    return Address(match.group(1), host, int(match.group(3)))


def parse_all(text: str) -> list[Address]:
    """Comma-separated listener URLs, each once."""
    found: list[Address] = []
    for part in text.split(","):
        if part.strip():
            address = parse(part)
            if address not in found:
                found.append(address)
    if not found:
        raise ValueError(ACCEPTED)
    return found
