"""Scaling out, end to end: real server processes sharing a real Redis, and Redis failing."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import httpx
import pytest
import redis

from tests.support.http import hour_stats, past_hour_ts
from tests.support.servers import SERVE, RedisServer, Server, free_port

pytestmark = pytest.mark.e2e


def ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def test_two_processes_sharing_one_redis_answer_exactly(
    redis_url: str, servers: list[Server]
) -> None:
    servers += [Server("--store", redis_url, "--redis-prefix", "pair") for _ in range(2)]
    ts = past_hour_ts()
    expected: Counter[str] = Counter()
    clients = [httpx.Client(base_url=server.url) for server in servers]
    try:
        for i in range(300):
            event = {"all.com": 1, f"h{i % 7}.com": i % 3}
            if i % 50 == 0:  # a batch now and then
                body = [{"timestamp": ts, **event}, {"timestamp": ts, "b.com": 2}]
                response = clients[i % 2].post("/counters", json=body)
                expected["b.com"] += 2
            else:
                response = clients[i % 2].post("/counter", json={"timestamp": ts, **event})
            assert response.status_code == 200, response.text
            expected.update(event)
    finally:
        for client in clients:
            client.close()
    expected = Counter({host: n for host, n in expected.items() if n})
    for server in servers:
        assert hour_stats(server) == ranked(expected)


class Answer(NamedTuple):
    started: float
    ended: float
    host: str  # this request's own host, besides a.com and b.com
    status: int
    text: str
    retry_after: str | None


class Load:
    """Threads posting events as fast as they get answers, recording each one.

    Each event counts a.com, b.com and a host of its own, so that the check can
    tell which requests were applied, not only how many.
    """

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.ts = past_hour_ts()
        self.done: list[Answer] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.post, args=(n,)) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def post(self, thread: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for n in itertools.count():
                if self.stopping.is_set():
                    return
                host = f"r{thread}-{n}.com"
                event = {"timestamp": self.ts, "a.com": 1, "b.com": 1, host: 1}
                started = time.monotonic()
                response = client.post("/counter", json=event)
                self.done.append(
                    Answer(
                        started,
                        time.monotonic(),
                        host,
                        response.status_code,
                        response.text,
                        response.headers.get("retry-after"),
                    )
                )

    def wait(
        self, what: str, condition: Callable[[list[Answer]], bool], timeout: float = 15
    ) -> None:
        """Let the load run until ``condition(answers so far)`` holds."""
        deadline = time.monotonic() + timeout
        while not condition(list(self.done)):
            assert time.monotonic() < deadline, f"no {what} within {timeout} s: {self.statuses()}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.done)


def count(answers: list[Answer], status: int, since: float = 0.0) -> int:
    return sum(1 for a in answers if a.status == status and a.started > since)


def wait_healthy(server: Server, healthy: bool, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (httpx.get(server.url + "/healthz").status_code == 200) == healthy:
            return
        time.sleep(0.05)
    raise AssertionError(f"/healthz did not turn {'200' if healthy else '503'}")


def check_failures(load: Load) -> None:
    for answer in load.done:
        assert answer.status in (200, 503, 504), answer.text
        # The timeout, and as long again to settle a write sent without reply.
        assert answer.ended - answer.started < 3, "a request hung"
        if answer.status == 503:
            assert answer.retry_after == "1"
            assert "nothing was applied" in answer.text
        if answer.status == 504:
            assert answer.retry_after is None
            assert "may or may not have been counted" in answer.text


def check_counted(redis_url: str, load: Load, since: float = 0.0) -> Counter[int]:
    """Every request started after ``since`` and answered 200 is counted exactly once,
    none answered 503 is, and one answered 504 once or not at all. Returns how many
    of each status were counted."""
    hour = load.ts - load.ts % 3600
    with redis.Redis.from_url(redis_url) as client:
        stored = {
            host.decode(): int(score)
            for host, score in client.zrange(f"tophosts:h:{hour}", 0, -1, withscores=True)
        }
    counted: Counter[int] = Counter()
    for answer in load.done:
        n = stored.pop(answer.host, 0)
        if answer.started > since:
            allowed = {200: (1,), 504: (0, 1)}.get(answer.status, (0,))
            assert n in allowed, f"{answer.host} answered {answer.status} and counted {n} times"
        counted[answer.status] += n
    # Whole events only: a.com and b.com once for each request counted.
    applied = sum(counted.values())
    assert stored == {"a.com": applied, "b.com": applied}
    return counted


def test_killing_redis_mid_load_gives_503s_then_service_resumes(
    own_redis: RedisServer, servers: list[Server]
) -> None:
    servers.append(Server("--store", own_redis.url, "--redis-timeout", "0.5"))
    server = servers[0]
    load = Load(server.url)
    try:
        load.wait("200 before the kill", lambda done: count(done, 200) >= 20)
        own_redis.kill()
        killed = time.monotonic()
        wait_healthy(server, False)
        load.wait("503 after the kill", lambda done: count(done, 503, killed) >= 20)
        assert httpx.get(server.url + "/stats").status_code == 503
        own_redis.start()  # empty: what it held died with it
        wait_healthy(server, True)
        back = time.monotonic()
        load.wait("200 once Redis is back", lambda done: count(done, 200, back) >= 20)
    finally:
        load.stop()
    check_failures(load)
    # What Redis held died with it: only the requests sent since are checked.
    counted = check_counted(own_redis.url, load, since=killed)
    assert counted[200] == count(load.done, 200, killed) > 0
    assert counted[503] == 0


def test_a_hung_redis_gives_503s_and_504s_and_none_of_them_is_applied_later(
    own_redis: RedisServer, servers: list[Server]
) -> None:
    # The default timeout: half of it is the margin for a reply to come back
    # from a write Redis started in time, which a loaded machine can eat into.
    servers.append(Server("--store", own_redis.url, "--redis-timeout", "1"))
    server = servers[0]
    load = Load(server.url)
    try:
        load.wait("200 before the pause", lambda done: count(done, 200) >= 20)
        own_redis.pause()
        paused = time.monotonic()
        try:
            wait_healthy(server, False)
            # The writes in flight end in 504 (two timeouts); the next ones
            # fail to connect, or queue behind them (503).
            load.wait(
                "504 and 503 while Redis hangs",
                lambda done: count(done, 504, paused - 3) > 0 and count(done, 503, paused) > 0,
            )
        finally:
            own_redis.resume()
        wait_healthy(server, True)
        back = time.monotonic()
        load.wait("200 once Redis is back", lambda done: count(done, 200, back) >= 20)
    finally:
        load.stop()
    check_failures(load)
    # Redis, resumed, runs the writes it was sent while hung: past their start
    # deadlines, they change nothing. But a write it ran just before the pause,
    # whose reply it never sent, did apply: that is what a 504 means.
    counted = check_counted(own_redis.url, load)
    assert counted[200] == load.statuses()[200]
    assert counted[503] == 0
    stats = hour_stats(server)  # and /stats says the same
    assert stats["a.com"] == stats["b.com"] == sum(counted.values())


def test_an_instance_starts_while_redis_is_down_and_serves_once_it_is_up(
    own_redis: RedisServer,
) -> None:
    own_redis.kill()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--store", own_redis.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_health(url, 503)
        own_redis.start()
        wait_health(url, 200)
        response = httpx.post(url + "/counter", json={"timestamp": past_hour_ts(), "a": 1})
        assert response.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "answering 503 until it is back" in out


def wait_health(url: str, status: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/healthz did not answer {status}")
