"""``tophosts load``: post synthetic counters to a running server.

Handy to watch the dashboard move, or to smoke-test a deployment. It is bounded
by ``--duration`` and ``--events``, keeps one connection alive, and prints what
it sent so the numbers can be checked against ``/stats``.
"""

from __future__ import annotations

import argparse
import http.client
import random
import time
import urllib.parse

import msgspec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (max)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to send (max)")
    parser.add_argument("--hosts", type=int, default=100, help="size of the host pool")
    parser.add_argument("--per-event", type=int, default=5, help="hosts per event")
    parser.add_argument("--batch", type=int, default=100, help="events per POST /counters")
    parser.add_argument("--seed", type=int, default=None, help="random seed")


def run(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    rng = random.Random(args.seed)
    # A skewed pool, so the top of the ranking is stable enough to watch.
    pool = [f"host{i}.example" for i in range(args.hosts)]
    weights = [1 / (i + 1) for i in range(args.hosts)]
    per_event = min(args.per_event, args.hosts)
    sent = 0
    deadline = time.monotonic() + args.duration
    while sent < args.events and time.monotonic() < deadline:
        now = int(time.time())
        batch = []
        for _ in range(min(args.batch, args.events - sent)):
            event: dict[str, int] = {"timestamp": now}
            for host in rng.choices(pool, weights, k=per_event):
                event[host] = event.get(host, 0) + 1
            batch.append(event)
        conn.request(
            "POST", "/counters", msgspec.json.encode(batch), {"content-type": "application/json"}
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            print(f"server answered {response.status}: {body.decode(errors='replace')}")
            return 1
        sent += len(batch)
    conn.close()
    print(f"sent {sent} events to {args.url}")
    return 0
