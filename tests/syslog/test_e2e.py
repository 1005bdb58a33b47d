"""The syslog receiver in a real tophosts process: shutdown, --workers, floods, hostile input."""

from __future__ import annotations

import contextlib
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.servers import Server, free_port
from tests.support.wait import until
from tests.support.webservers import syslog_figures

pytestmark = pytest.mark.e2e

OFFSET = ("--clock-offset", "3600")  # the current hour is the past hour answered for


@pytest.fixture(autouse=True)
def same_hour() -> None:
    """A boundary of the hour inside a test would split its counts over two hours."""
    while time.time() % 3600 > 3600 - 30:
        time.sleep(0.5)


def line(host: str) -> bytes:
    return b"<190>Dec  1 13:55:32 vm nginx: %.3f %s" % (time.time(), host.encode())


def listeners(port: int) -> tuple[str, ...]:
    return ("--syslog", f"udp://127.0.0.1:{port}", "--syslog", f"tcp://127.0.0.1:{port}")


def top_hour(url: str) -> dict[str, int]:
    response = httpx.get(url + "/stats", params={"stats_type": "hour", "limit": 1000})
    assert response.status_code == 200, response.text
    top: dict[str, int] = response.json()["top_hosts"]
    return top


def received(url: str, transport: str) -> float:
    figures = syslog_figures(url)
    return sum(v for (name, t, _), v in figures.items() if name == "lines_total" and t == transport)


def test_sigterm_applies_every_line_received(tmp_path: Path) -> None:
    """Senders keep sending through the shutdown, so lines are still arriving when the
    listeners stop: each line the server read must be in its final snapshot."""
    port = free_port()
    snapshot = ("--snapshot", str(tmp_path / "snapshot"))
    server = Server(*listeners(port), *OFFSET, *snapshot)
    stop = threading.Event()

    def send_udp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect(("127.0.0.1", port))
            datagram = line("udp.example")
            with contextlib.suppress(OSError):  # refused once the listener is gone
                while not stop.is_set():
                    udp.send(datagram)
                    time.sleep(0.0001)

    def send_tcp() -> None:
        with socket.create_connection(("127.0.0.1", port)) as tcp:
            chunk = line("tcp.example") + b"\n"
            with contextlib.suppress(OSError):  # reset once the listener is gone
                while not stop.is_set():
                    tcp.sendall(chunk * 10)
                    time.sleep(0.001)

    senders = [threading.Thread(target=send_udp), threading.Thread(target=send_tcp)]
    for sender in senders:
        sender.start()
    try:
        until(lambda: top_hour(server.url).get("tcp.example", 0) > 0)
        server.proc.send_signal(signal.SIGTERM)
        code, output = server.stop()
    finally:
        stop.set()
        for sender in senders:
            sender.join()
        if server.proc.poll() is None:
            server.proc.kill()
    assert code == 0, output
    stopped = dict(re.findall(r"syslog (udp|tcp)://\S+: stopped; (\d+ lines received: .*)", output))
    counts = {}
    for transport in ("udp", "tcp"):
        got = re.fullmatch(
            r"(\d+) lines received: (\d+) accepted, 0 expired, 0 refused, 0 unparsed",
            stopped[transport],
        )
        assert got is not None, output
        assert got.group(1) == got.group(2)
        counts[f"{transport}.example"] = int(got.group(2))
    assert min(counts.values()) > 0, output
    again = Server(*OFFSET, *snapshot)
    try:
        assert top_hour(again.url) == counts
    finally:
        again.stop()


def test_workers_share_the_listeners_with_redis(redis_url: str) -> None:
    port = free_port()
    server = Server(*listeners(port), *OFFSET, "--workers", "2", "--store", redis_url)
    try:
        # Several UDP sockets (the kernel spreads them by source port) and connections.
        expected: dict[str, int] = {}
        for i in range(8):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.connect(("127.0.0.1", port))
            for _ in range(100 + i):
                udp.send(line(f"u{i}.example"))
            expected[f"u{i}.example"] = 100 + i
            udp.close()
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for i, tcp in enumerate(connections):
            tcp.sendall(b"".join(line(f"t{i}.example") + b"\n" for _ in range(50)))
            expected[f"t{i}.example"] = 50
        total = sum(expected.values())
        until(lambda: top_hour(server.url) == expected)
        # Any worker's /metrics answers for both (they write every second).
        until(lambda: received(server.url, "udp") + received(server.url, "tcp") == total)
        for tcp in connections:
            tcp.close()
    finally:
        code, output = server.stop()
    assert code == 0, output
    # Each worker had a socket of its own for each listener.
    assert output.count(f"syslog: listening on udp://127.0.0.1:{port}") == 2
    assert output.count(f"syslog: listening on tcp://127.0.0.1:{port}") == 2


def test_a_flood_past_the_receive_buffer_is_counted_and_survived() -> None:
    port = free_port()
    server = Server(*listeners(port), *OFFSET, "--syslog-rcvbuf", "16KiB")
    try:
        assert "asked for a receive buffer" not in server.output()
        sent = 0
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.connect(("127.0.0.1", port))
        datagram = line("flood.example")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and sent < 300_000:
            for _ in range(1000):
                udp.send(datagram)
            sent += 1000
        assert httpx.get(server.url + "/healthz").status_code == 200

        def settled() -> bool:
            figures = syslog_figures(server.url)
            dropped = figures.get(("dropped_total", "udp", ""), 0)
            return received(server.url, "udp") + dropped == sent

        until(settled)
        figures = syslog_figures(server.url)
        assert figures[("dropped_total", "udp", "")] > 0
        accepted = figures[("lines_total", "udp", "accepted")]
        assert top_hour(server.url) == {"flood.example": accepted}
    finally:
        server.stop()


HOSTILE = [
    b"",
    b"\x00" * 100,
    b"<" * 5000,
    b"<13>1 " + b"[" * 10_000,
    b'<13>1 - - - - - [x a="' + b"\\" * 20_000,
    b"<190>Dec  1 13:55:32 vm nginx: " + b"9" * 60_000 + b" a",
    b"<190>Dec  1 13:55:32 vm nginx: 1 " + b"x" * 60_000,
    b"{" * 60_000,
    b'{"ts": 1e999999, "request": {"host": "a"}}',
    b"\xff\xfe" * 1000,
    bytes(range(256)) * 200,
]


def test_hostile_lines_over_udp_and_tcp_leave_the_listeners_serving() -> None:
    port = free_port()
    server = Server(*listeners(port), *OFFSET, "--syslog-idle-timeout", "5")
    rng = random.Random(14)
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(300)]
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.connect(("127.0.0.1", port))
        for datagram in [*HOSTILE, *garbage, b"\x00" * 65507]:
            udp.send(datagram)
        for stream in [
            *HOSTILE,
            b"<13>" + b"x" * 200_000,  # one frame over 64 KiB
            b"99999999999 <13>",
            b"12 <13>a",  # ends mid-frame
            *garbage[:20],
            b"<13>a: 1 \xff\n<13>b: \x00 x\n" * 100,
        ]:
            try:
                with socket.create_connection(("127.0.0.1", port)) as tcp:
                    tcp.sendall(stream)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by tophosts while still sending: as it should
        # Still serving, and still counting.
        udp.send(line("after.example"))
        with socket.create_connection(("127.0.0.1", port)) as tcp:
            tcp.sendall(line("after.example") + b"\n")
        until(lambda: top_hour(server.url) == {"after.example": 2})
        figures = syslog_figures(server.url)
        assert figures[("lines_total", "udp", "accepted")] == 1
        assert figures[("lines_total", "tcp", "accepted")] == 1
        assert figures[("lines_total", "udp", "unparsed")] >= len(HOSTILE) + 300 - 2
        assert figures[("connections_closed_total", "tcp", "frame_too_large")] >= 1
        assert figures[("connections_closed_total", "tcp", "garbage")] >= 1
        assert figures[("bad_lines_total", "tcp", "truncated")] >= 1
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        code, output = server.stop()
    assert code == 0
    assert "Traceback" not in output, output


def test_a_bad_listener_stops_start_up_with_what_is_accepted() -> None:
    with pytest.raises(RuntimeError, match="expected udp://HOST:PORT or tcp://HOST:PORT"):
        Server("--syslog", "syslog://127.0.0.1:514")


def test_the_redis_store_gets_the_lines_too(redis_url: str) -> None:
    port = free_port()
    server = Server(*listeners(port), *OFFSET, "--store", redis_url)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.connect(("127.0.0.1", port))
        for host, n in (("a.example", 7), ("b.example", 5), ("c.example", 2)):
            for _ in range(n):
                udp.send(line(host))
        until(lambda: top_hour(server.url) == {"a.example": 7, "b.example": 5, "c.example": 2})
        hour = int(time.time()) // 3600 * 3600
        with redis.Redis.from_url(redis_url) as client:
            assert client.zscore(f"tophosts:h:{hour}", "a.example") == 7
    finally:
        server.stop()
