"""--workers (server/workers.py): workers share one Redis; the memory store refuses them."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support.http import hour_stats, past_hour_ts
from tests.support.servers import Server, free_port
from tests.support.threads import in_threads
from tests.support.wait import until

pytestmark = pytest.mark.e2e


def test_workers_share_counts_through_redis(redis_url: str, servers: list[Server]) -> None:
    servers.append(Server("--store", redis_url, "--workers", "2"))
    ts = past_hour_ts()
    errors: list[str] = []

    def post(n: int) -> None:
        # A client of its own: its own connection, so the workers share the load.
        with httpx.Client(base_url=servers[0].url) as client:
            for _ in range(100):
                response = client.post("/counter", json={"timestamp": ts, f"t{n}": 1, "all": 1})
                if response.status_code != 200:
                    errors.append(response.text)

    in_threads(post, 6)
    assert errors == []
    expected = {"all": 600, **{f"t{n}": 100 for n in range(6)}}
    assert hour_stats(servers[0]) == expected
    # Every worker's /metrics answers for all workers (multiprocess mode), once
    # each has flushed (every second).
    accepted = 'tophosts_events_total{result="accepted"} 600.0'
    until(lambda: accepted in httpx.get(servers[0].url + "/metrics").text, what="the flush")
    for _ in range(4):  # new connections, so different workers answer
        metrics = httpx.get(servers[0].url + "/metrics").text
        assert accepted in metrics
    code, out = servers[0].stop()
    assert code == 0
    assert "Traceback" not in out


def test_more_than_one_worker_on_the_memory_store_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tophosts", "serve", "--port", str(free_port()), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "each worker would hold different counts" in proc.stderr
    assert "--store redis://" in proc.stderr
