"""The real web servers, configured by the README's snippets, feeding a real tophosts.

Each test starts tophosts with ``--syslog`` on free ports and ``--clock-offset
3600`` (so the current hour is the "past hour" it answers for), starts the real
server from its README snippet (tests/support/webservers.py), sends 7, 5 and 2
requests for three hosts, and asserts that ``/stats`` shows exactly those counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import Server, free_port
from tests.support.webservers import (
    Apache,
    Caddy,
    HAProxy,
    Nginx,
    Rsyslog,
    WebServer,
    syslog_figures,
)

pytestmark = pytest.mark.e2e

# As the client sends them; each server's snippet normalizes the host its way.
REQUESTS = {"Shop.Example.COM:8443": 7, "api.example": 5, "www.example:80": 2}
LOWERED = {"shop.example.com": 7, "api.example": 5, "www.example": 2}


@pytest.fixture
def tophosts() -> Iterator[Server]:
    # A boundary of the hour inside the test would split its counts over two hours.
    while time.time() % 3600 > 3600 - 30:
        time.sleep(0.5)
    port = free_port()
    server = Server(
        *("--syslog", f"udp://127.0.0.1:{port}", "--syslog", f"tcp://127.0.0.1:{port}"),
        *("--clock-offset", "3600"),
    )
    server.syslog_port = port  # type: ignore[attr-defined]
    yield server
    server.stop()


def syslog_port(server: Server) -> int:
    return int(server.syslog_port)  # type: ignore[attr-defined]


def lines(server: Server) -> dict[tuple[str, str], float]:
    """``{(transport, result): lines}`` from the server's /metrics."""
    figures = syslog_figures(server.url)
    return {(t, result): v for (name, t, result), v in figures.items() if name == "lines_total"}


def wait_for(server: Server, transport: str, accepted: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while lines(server).get((transport, "accepted"), 0) < accepted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{transport} lines so far: {lines(server)}\n{server.output()}")
        time.sleep(0.05)


def top_hour(server: Server) -> dict[str, int]:
    response = httpx.get(server.url + "/stats", params={"stats_type": "hour", "limit": 100})
    assert response.status_code == 200
    top: dict[str, int] = response.json()["top_hosts"]
    return top


def send_and_check(
    server: Server, web: WebServer, transport: str, expected: dict[str, int]
) -> None:
    for host, n in REQUESTS.items():
        web.request(host, n)
    wait_for(server, transport, sum(expected.values()))
    assert top_hour(server) == expected
    counted = lines(server)
    assert counted[(transport, "unparsed")] == 0
    assert counted[(transport, "refused")] == 0
    assert counted[(transport, "accepted")] == sum(expected.values())


def test_nginx_over_udp(tophosts: Server) -> None:
    nginx = Nginx(syslog_port(tophosts))
    try:
        send_and_check(tophosts, nginx, "udp", LOWERED)
    finally:
        nginx.stop()


def test_nginx_through_a_local_rsyslog_relay_over_tcp_octet_counted(tophosts: Server) -> None:
    relay = Rsyslog(syslog_port(tophosts))
    nginx = None
    try:
        nginx = Nginx(syslog_port(tophosts), target=relay.port)
        send_and_check(tophosts, nginx, "tcp", LOWERED)
        figures = syslog_figures(tophosts.url)
        assert figures[("connections", "tcp", "")] == 1
        assert not any(name == "connections_closed_total" for name, _, _ in figures)
    finally:
        if nginx is not None:
            nginx.stop()
        relay.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_haproxy(tophosts: Server, transport: str) -> None:
    haproxy = HAProxy(syslog_port(tophosts), tcp=transport == "tcp")
    try:
        send_and_check(tophosts, haproxy, transport, LOWERED)
    finally:
        haproxy.stop()


def test_apache_through_logger(tophosts: Server) -> None:
    apache = Apache(syslog_port(tophosts))
    try:
        send_and_check(tophosts, apache, "udp", LOWERED)
    finally:
        apache.stop()


def test_caddy(tophosts: Server) -> None:
    caddy = Caddy(syslog_port(tophosts))
    try:
        # Caddy keeps the case the client sent; the snippet drops the port.
        expected = {"Shop.Example.COM": 7, "api.example": 5, "www.example": 2}
        send_and_check(tophosts, caddy, "udp", expected)
    finally:
        caddy.stop()
