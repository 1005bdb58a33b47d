"""``tophosts load``: what it says it sent is what the server counted."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.support.servers import Server

pytestmark = pytest.mark.e2e


def load(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tophosts", "load", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_load_sends_what_it_says_and_the_server_counts_it_all() -> None:
    # load stamps its events with its own clock; the server runs an hour ahead,
    # so they are all in its past hour at once, unless the real hour turns
    # during the run: start clear of that.
    while time.time() % 3600 > 3590:
        time.sleep(0.5)
    server = Server("--clock-offset", "3600")
    try:
        args = ("--events", "700", "--batch", "100", "--hosts", "50", "--per-event", "3")
        done = load(server.url, *args, "--seed", "7")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == f"sent 700 events to {server.url}"
        query = {"stats_type": "hour", "limit": "1000"}
        hour = httpx.get(server.url + "/stats", params=query).json()["top_hosts"]
        assert sum(hour.values()) == 700 * 3
        assert set(hour) <= {f"host{i}.example" for i in range(50)}
        # The pool is skewed: host0 is the most requested.
        assert next(iter(hour)) == "host0.example"
        metrics = httpx.get(server.url + "/metrics").text
        assert 'tophosts_events_total{result="accepted"} 700.0' in metrics
    finally:
        server.stop()


def test_load_idempotent_sends_a_key_of_its_own_with_every_request() -> None:
    while time.time() % 3600 > 3590:
        time.sleep(0.5)
    server = Server("--clock-offset", "3600")
    try:
        args = ("--events", "500", "--batch", "100", "--hosts", "20", "--per-event", "2")
        for _ in range(2):  # two runs: their keys never meet
            done = load(server.url, *args, "--idempotent")
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.strip() == (
                f"sent 500 events to {server.url}, each of the 5 requests with its own "
                "Idempotency-Key"
            )
        query = {"stats_type": "hour", "limit": "1000"}
        hour = httpx.get(server.url + "/stats", params=query).json()["top_hosts"]
        assert sum(hour.values()) == 2 * 500 * 2
        metrics = httpx.get(server.url + "/metrics").text
        assert "tophosts_idempotency_keys 10.0" in metrics
        assert "tophosts_idempotent_replays_total 0.0" in metrics
    finally:
        server.stop()


def test_load_stops_at_the_first_refusal_and_says_why() -> None:
    server = Server("--ingest-token", "ingest-token-0123456789")
    try:
        done = load(server.url, "--events", "10")
        assert done.returncode == 1
        assert done.stdout.startswith("server answered 401: ")
        assert "needs a token" in done.stdout
    finally:
        server.stop()
