"""Each format as the real server writes it, with the README's configuration line."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.support.webservers import Apache, Caddy, HAProxy, Nginx, WebServer
from tophosts.formats import LOG_FILE_FORMATS

pytestmark = pytest.mark.e2e

HOSTS = {"a.example": 3, "b.example": 2, "c.example": 1}


def wait_for_lines(server: WebServer, n: int, timeout: float = 10.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        lines = server.access_log.read_bytes().splitlines() if server.access_log.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("launcher", "fmt"),
    [
        (lambda: Nginx(0, tail="tail-nginx-vhost"), "nginx-vhost"),
        (lambda: Nginx(0, tail="tail-nginx-tophosts"), "tophosts"),
        (lambda: Apache(0, tail="tail-apache"), "combined-vhost"),
        (lambda: HAProxy(0, tail="tail-haproxy"), "haproxy"),
        (lambda: Caddy(0, tail="tail-caddy"), "caddy-json"),
    ],
    ids=["nginx-vhost", "tophosts", "combined-vhost", "haproxy", "caddy-json"],
)
def test_the_readme_configuration_writes_lines_the_format_reads(
    launcher: Callable[[], WebServer], fmt: str
) -> None:
    server = launcher()
    try:
        before = int(time.time())
        for host, n in HOSTS.items():
            server.request(host, n)
        lines = wait_for_lines(server, sum(HOSTS.values()))
        after = int(time.time())
    finally:
        server.stop()
    parse = LOG_FILE_FORMATS[fmt]
    parsed = [parse(line) for line in lines]
    assert Counter(host.decode() for _, host in parsed) == HOSTS, lines
    assert all(before <= second <= after for second, _ in parsed), (before, parsed, after)
