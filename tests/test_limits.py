"""Slow clients, overload and cardinality: bounded, with clear 4xx/503 answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import MakeClient
from tests.support.clock import T0
from tests.support.servers import Server
from tophosts.events import EventError
from tophosts.store import Store
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


# -- cardinality ----------------------------------------------------------------


def test_new_hosts_past_max_tracked_hosts_get_429_while_known_ones_count(
    make_client: MakeClient,
) -> None:
    client = make_client(max_tracked_hosts=3)
    assert (
        client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1, "b": 1}).status_code == 200
    )
    assert client.post("/counter", json={"timestamp": PAST_MINUTE, "c": 1}).status_code == 200
    refused = client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 5, "new.com": 1})
    assert refused.status_code == 429
    assert '"new.com"' in refused.json()["error"]
    assert "--max-tracked-hosts" in refused.json()["error"]
    batch = [{"timestamp": PAST_MINUTE, "a": 1}, {"timestamp": PAST_MINUTE, "d": 1}]
    refused = client.post("/counters", json=batch)
    assert (refused.status_code, refused.json()["index"]) == (429, 1)
    assert client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 2}).status_code == 200
    assert client.get("/stats").json() == {"top_hosts": {"a": 3, "b": 1, "c": 1}}
    metrics = client.get("/metrics").text
    assert 'tophosts_events_total{result="rejected"} 3.0' in metrics
    assert 'route="/counter",status="429"} 1.0' in metrics


def test_the_cap_is_per_window(make_client: MakeClient) -> None:
    client = make_client(max_tracked_hosts=2)
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1, "b": 1})
    # The past hour is another window, with room of its own.
    past_hour = past(T0, Window.HOUR).start
    assert client.post("/counter", json={"timestamp": past_hour, "c": 1, "d": 1}).status_code == 200
    assert client.post("/counter", json={"timestamp": past_hour, "e": 1}).status_code == 429


# -- slow clients and overload, on a real server ---------------------------------


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
    time.sleep(0.2)
    try:
        response = httpx.get(strict_server.url + "/healthz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "--limit-concurrency" in response.json()["error"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(strict_server.url + "/healthz").status_code == 200


@pytest.mark.anyio
async def test_concurrent_new_hosts_stop_exactly_at_the_cap(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(max_tracked_hosts=5)
    results = await asyncio.gather(
        *(store.add([(PAST_MINUTE, {f"h{i}": 1})]) for i in range(12)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, EventError)]
    assert len(refused) == 7
    assert {r.status for r in refused} == {429}
    assert len(await store.top(Window.MINUTE, 100)) == 5
    await store.close()
