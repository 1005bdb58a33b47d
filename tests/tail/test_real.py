"""``tophosts tail`` against the real things: nginx writing its access log with the
README's ``log_format``, logrotate rotating it under load, a real tophosts server,
and the shipper as a real process, killed, restarted, and cut off from its server.

Every scenario asserts that ``/stats`` shows exactly what nginx served, per host.
The server runs with ``--clock-offset 3600``, so that its past hour is the
current real hour, in which nginx stamps the lines.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import HttpReplyProxy, Server, Tail, free_port
from tests.support.wait import until
from tests.support.webservers import Logrotate, Nginx
from tophosts.formats import nginx_vhost

pytestmark = pytest.mark.e2e

HOSTS = ("shop.example.com", "api.example.com", "www.example.org")


@pytest.fixture(autouse=True)
def room_in_the_hour() -> None:
    """Start with at least 3 minutes left in the current hour: the lines of one test
    then all fall in the server's past hour (it runs an hour ahead)."""
    if time.time() % 3600 > 3600 - 180:
        until(lambda: time.time() % 3600 < 60, timeout=200, what="the next hour")


@pytest.fixture
def nginx() -> Iterator[Nginx]:
    server = Nginx(0, tail="tail-nginx-vhost")
    yield server
    server.stop()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server("--clock-offset", "3600")
    yield srv
    srv.stop()


class Load:
    """Requests to nginx from a thread, round-robin over ``HOSTS``, counted as answered."""

    def __init__(self, nginx: Nginx, n: int, hosts: tuple[str, ...] = HOSTS) -> None:
        self.nginx = nginx
        self.n = n
        self.hosts = hosts
        self.sent: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                for i in range(self.n):
                    host = self.hosts[i % len(self.hosts)]
                    self.nginx.request(host, 1, client)
                    self.sent[host] += 1
        except BaseException as exc:
            self.errors.append(exc)

    def total(self) -> int:
        return sum(self.sent.values())

    def join(self) -> Counter[str]:
        self.thread.join(120)
        assert not self.errors, self.errors
        return self.sent


def stats(server: Server) -> Counter[str]:
    response = httpx.get(
        server.url + "/stats", params={"stats_type": "hour", "limit": "1000"}, timeout=10
    )
    return Counter(response.json()["top_hosts"])


def assert_exactly(server: Server, expected: Counter[str], tail: Tail | None = None) -> None:
    """Wait until the server has counted as many lines as expected, then compare per host:
    a line counted twice shows as soon as it is counted."""
    total = sum(expected.values())
    try:
        until(lambda: sum(stats(server).values()) >= total, what=f"{total} lines counted")
    except AssertionError:
        raise AssertionError(
            f"counted {dict(stats(server))}, expected {dict(expected)}\n"
            + (tail.output()[-3000:] if tail else "")
        ) from None
    assert stats(server) == expected


def finish(shipper: Tail, server: Server, expected: Counter[str]) -> None:
    """SIGTERM: exit 0, everything acknowledged, and still exactly the expected counts."""
    assert shipper.stop() == 0, shipper.output()[-3000:]
    assert "stopped; everything read was acknowledged" in shipper.output()
    assert stats(server) == expected


def tail(nginx: Nginx, url: str, state: Path, *extra: str) -> Tail:
    return Tail(
        str(nginx.access_log),
        *("--format", "nginx-vhost", "--url", url, "--state", str(state)),
        *("--from-start", "--interval", "0.2", "--rotate-wait", "1", "--log-level", "debug"),
        *extra,
    )


def lines_on_disk(directory: Path) -> Counter[str]:
    """Hosts of every line in the access log and its rotated copies: what there is to count."""
    found: Counter[str] = Counter()
    for path in directory.glob("access.log*"):
        for line in path.read_bytes().split(b"\n")[:-1]:  # complete lines only
            found[nginx_vhost(line)[1].decode()] += 1
    return found


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{selector}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_steady_load_is_counted_exactly(nginx: Nginx, server: Server, tmp_path: Path) -> None:
    shipper = tail(nginx, server.url, tmp_path / "tail.state")
    sent = Load(nginx, 1500).join()
    assert sent == dict.fromkeys(HOSTS, 500)
    assert_exactly(server, sent, shipper)
    finish(shipper, server, sent)


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_rotation_mid_load(nginx: Nginx, server: Server, tmp_path: Path, how: str) -> None:
    if how == "rename":
        options = (
            "rotate 5\nmissingok\nnocompress\ncreate\n"
            f"postrotate\n  kill -USR1 $(cat {nginx.pid_file})\nendscript"
        )
    else:
        options = "rotate 5\nmissingok\nnocompress\ncopytruncate"
    logrotate = Logrotate(nginx.access_log, options)
    shipper = tail(nginx, server.url, tmp_path / "tail.state")
    try:
        load = Load(nginx, 3000)
        for third in (1000, 2000):
            until(lambda t=third: load.total() >= t)  # type: ignore[misc]
            logrotate.rotate()
        sent = load.join()
        rotated = sorted(p.name for p in nginx.dir.glob("access.log.*"))
        assert rotated == ["access.log.1", "access.log.2"]
        if how == "rename":
            expected = sent
        else:
            # logrotate loses the lines nginx writes between its copy and its
            # truncation; what is on disk is what there is to count, exactly.
            until(lambda: sum(lines_on_disk(nginx.dir).values()) >= 3000 - 50)
            expected = lines_on_disk(nginx.dir)
            assert sum(expected.values()) <= 3000
        assert_exactly(server, expected, shipper)
    finally:
        logrotate.stop()
    finish(shipper, server, expected)


def test_bad_lines_are_counted_and_skipped_and_their_batch_counts(
    nginx: Nginx, server: Server, tmp_path: Path
) -> None:
    metrics_port = free_port()
    shipper = tail(nginx, server.url, tmp_path / "tail.state", "--metrics-port", str(metrics_port))
    load = Load(nginx, 600)
    until(lambda: load.total() >= 300)
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(time.time() + 86400))
    with nginx.access_log.open("ab") as log:  # O_APPEND: whole lines among nginx's own
        log.write(b"not an access log line\n" * 3)
        log.write(b'- 127.0.0.1 - - [01/Jan/2025:00:00:00 +0000] "GET / HTTP/1.1" 200 2 "-" "-"\n')
        log.write(
            f'future.example 127.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 200 2 "-" "-"\n'.encode()
        )
    sent = load.join()
    assert_exactly(server, sent, shipper)
    until(lambda: metric(metrics_port, "tophosts_tail_lines_total", result="refused") == 1)
    assert metric(metrics_port, "tophosts_tail_lines_total", result="bad") == 4
    assert metric(metrics_port, "tophosts_tail_lines_total", result="shipped") == 600
    finish(shipper, server, sent)
    output = shipper.output()
    assert "ahead of the server clock" in output
    assert "future.example 127.0.0.1" in output  # the offending line is named


def test_the_server_stopped_for_a_while_is_waited_for(nginx: Nginx, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    server = Server("--clock-offset", "3600", "--snapshot", str(snapshot))
    shipper = tail(nginx, server.url, tmp_path / "tail.state")
    try:
        load = Load(nginx, 1500)
        until(lambda: sum(stats(server).values()) >= 300)
        port = server.port
        assert server.stop()[0] == 0
        until(lambda: load.total() >= 900)  # lines pile up in the log meanwhile
        time.sleep(3)  # the outage: the shipper retries against a server that is down
        server = Server("--clock-offset", "3600", "--snapshot", str(snapshot), port=port)
        sent = load.join()
        assert_exactly(server, sent, shipper)
        assert "no answer from" in shipper.output()
        finish(shipper, server, sent)
    finally:
        server.stop()


# -- exactly once: these rely on the server's Idempotency-Key (issue 13) -------------


def test_kill_9_of_the_shipper_mid_batch_then_a_restart(
    nginx: Nginx, server: Server, tmp_path: Path
) -> None:
    proxy = HttpReplyProxy(server.port)
    state = tmp_path / "tail.state"
    shipper = tail(nginx, proxy.url, state, "--timeout", "30")
    try:
        load = Load(nginx, 1500)
        until(lambda: sum(stats(server).values()) >= 300)
        # The worst moment: the server has counted a batch, and its answer has not
        # reached the shipper, which has not recorded it.
        proxy.fault(b"POST /counters", action="drop")
        until(lambda: proxy.struck == 1)
        shipper.kill()
        assert '"pending":{' in state.read_text()
        shipper = tail(nginx, proxy.url, state)
        # Awaited: the dropped batch may hold the last lines, all counted already.
        until(lambda: "re-sending the pending batch" in shipper.output(), what="the re-send")
        sent = load.join()
        assert_exactly(server, sent, shipper)
        finish(shipper, server, sent)
    finally:
        proxy.close()


def test_the_server_stopped_for_10_s_with_snapshot_mid_batch(nginx: Nginx, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    server = Server("--clock-offset", "3600", "--snapshot", str(snapshot))
    proxy = HttpReplyProxy(server.port)
    shipper = tail(nginx, proxy.url, tmp_path / "tail.state", "--timeout", "30")
    try:
        load = Load(nginx, 1500)
        until(lambda: sum(stats(server).values()) >= 300)
        # A batch the server counts, then stops (its snapshot holds the batch's key)
        # before the answer gets back: the shipper retries across the restart.
        proxy.fault(b"POST /counters", action="drop")
        until(lambda: proxy.struck == 1)
        port = server.port
        assert server.stop()[0] == 0
        proxy.cut_connections()  # the answer is lost
        time.sleep(10)  # the outage itself
        server = Server("--clock-offset", "3600", "--snapshot", str(snapshot), port=port)
        sent = load.join()
        assert_exactly(server, sent, shipper)
        finish(shipper, server, sent)
    finally:
        proxy.close()
        server.stop()


def test_a_reply_dropped_on_the_way_back_is_replayed(
    nginx: Nginx, server: Server, tmp_path: Path
) -> None:
    proxy = HttpReplyProxy(server.port)
    shipper = tail(nginx, proxy.url, tmp_path / "tail.state")
    try:
        load = Load(nginx, 900)
        until(lambda: sum(stats(server).values()) >= 150)
        proxy.fault(b"POST /counters", action="cut")
        until(lambda: proxy.struck == 1)
        sent = load.join()
        assert_exactly(server, sent, shipper)
        finish(shipper, server, sent)
    finally:
        proxy.close()
