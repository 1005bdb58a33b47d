"""The HTTP protocol's bounds (server/protocol.py), against a real server: slow
clients get 408, and requests over the concurrency limit get 503 JSON."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import Server
from tests.support.wait import until

pytestmark = pytest.mark.e2e


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


@pytest.fixture
def strict_server() -> Iterator[Server]:
    srv = Server("--header-timeout", "1", "--body-timeout", "1", "--limit-concurrency", "2")
    yield srv
    srv.stop()


def test_headers_trickled_byte_by_byte_get_408(strict_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        answer = read_answer(sock, 3)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"--header-timeout" in answer
    assert time.monotonic() - started < 4


def test_a_silent_connection_is_closed(strict_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        assert read_answer(sock, 4).startswith(b"HTTP/1.1 408 ")


def test_a_body_shorter_than_its_content_length_gets_408(strict_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b'POST /counter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"timesta')
        answer = read_answer(sock, 4)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"--body-timeout" in answer
    assert httpx.get(strict_server.url + "/stats").json() == {"top_hosts": {}}


def test_requests_over_the_concurrency_limit_get_503_json(strict_server: Server) -> None:
    # Two requests held in flight, each waiting for the rest of its body.
    held = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", strict_server.port))
        sock.sendall(b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        held.append(sock)
    try:
        until(lambda: httpx.get(strict_server.url + "/healthz").status_code == 503, what="a 503")
        response = httpx.get(strict_server.url + "/healthz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "--limit-concurrency" in response.json()["error"]
    finally:
        for sock in held:
            sock.close()
    until(lambda: httpx.get(strict_server.url + "/healthz").status_code == 200, what="a 200")
