"""A few end-to-end tests against a real ``python -m tophosts serve`` on the real clock."""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter

import httpx
import pytest

from tests.support.servers import Server
from tests.support.threads import in_threads

pytestmark = pytest.mark.e2e


def test_post_and_query_over_real_http() -> None:
    # Shift the server's clock to hh:30:30, so that neither the minute nor the
    # hour can turn between the posts and the queries (they take a second or two).
    offset = 30 * 60 + 30 - time.time() % 3600
    server = Server("--clock-offset", f"{offset:.3f}")
    try:
        with httpx.Client(base_url=server.url) as client:
            now = int(time.time() + offset)
            ts = now - 60  # in the past minute
            event = {"timestamp": ts, "a.com": 2, "b.com": 1}
            assert client.post("/counter", json=event).json() == {"status": "ok"}
            batch = [{"timestamp": ts, "b.com": 5}, {"timestamp": now - 3600, "h.com": 1}]
            assert client.post("/counters", json=batch).json() == {
                "status": "ok",
                "accepted": 2,
                "expired": 0,
            }
            minute = client.get("/stats")
            assert minute.json() == {"top_hosts": {"b.com": 6, "a.com": 2}}
            assert minute.headers["x-window-start"] == str(ts - ts % 60)
            assert client.get("/stats", params={"stats_type": "hour"}).json() == {
                "top_hosts": {"h.com": 1}
            }
    finally:
        server.stop()


def test_eight_threads_posting_concurrently_lose_nothing(server: Server) -> None:
    per_thread, hosts = 250, ["a.com", "b.com", "c.com", "d.com"]
    ts = int(time.time()) - 3600  # the past hour holds still for the whole test
    errors: list[str] = []

    def post(seed: int) -> None:
        with httpx.Client(base_url=server.url) as client:
            for i in range(per_thread):
                host = hosts[(seed + i) % len(hosts)]
                response = client.post("/counter", json={"timestamp": ts, host: 1, "all.com": 2})
                if response.status_code != 200:
                    errors.append(response.text)

    in_threads(post, 8)
    assert errors == []
    expected = Counter({"all.com": 8 * per_thread * 2})
    for n in range(8):
        for i in range(per_thread):
            expected[hosts[(n + i) % len(hosts)]] += 1
    got = httpx.get(server.url + "/stats", params={"stats_type": "hour"}).json()["top_hosts"]
    assert got == dict(sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])))


def raw_request(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks)


def test_oversized_content_length_is_refused_before_the_body_is_sent(server: Server) -> None:
    started = time.monotonic()
    answer = raw_request(
        server.port,
        b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"--max-body" in answer
    assert time.monotonic() - started < 2


def test_oversized_chunked_body_is_refused_mid_stream() -> None:
    srv = Server("--max-body", "1000")
    try:
        chunk = b"a" * 600
        head = b"POST /counters HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2  # 1200 bytes, no terminating chunk
        answer = raw_request(srv.port, head + body)
        assert answer.startswith(b"HTTP/1.1 413 ")
    finally:
        srv.stop()


def test_sigterm_shuts_down_cleanly(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    code, out = server.stop()
    assert code == 0
    assert "Traceback" not in out
    assert "Shutting down" in out
