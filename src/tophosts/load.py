"""``tophosts load``: post synthetic counters to a running server.

Handy to watch the dashboard move, or to smoke-test a deployment. It is bounded
by ``--duration`` and ``--events``, keeps one connection alive, and prints what
it sent so the numbers can be checked against ``/stats``. With ``--idempotent``
every request carries an ``Idempotency-Key`` of its own.
"""

from __future__ import annotations

import argparse
import http.client
import os
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
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="send an Idempotency-Key (a new one) with every request",
    )


def run(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    rng = random.Random(args.seed)
    # A skewed pool, so the top of the ranking is stable enough to watch.
    pool = [f"host{i}.example" for i in range(args.hosts)]
    weights = [1 / (i + 1) for i in range(args.hosts)]
    per_event = min(args.per_event, args.hosts)
    sent = requests = 0
    # Keys unique to this run, so that two runs never replay each other's requests.
    run_id = os.urandom(8).hex()
    deadline = time.monotonic() + args.duration
    while sent < args.events and time.monotonic() < deadline:
        now = int(time.time())
        batch = []
        for _ in range(min(args.batch, args.events - sent)):
            event: dict[str, int] = {"timestamp": now}
            for host in rng.choices(pool, weights, k=per_event):
                event[host] = event.get(host, 0) + 1
            batch.append(event)
        headers = {"content-type": "application/json"}
        if args.idempotent:
            headers["idempotency-key"] = f"load-{run_id}-{requests}"
        conn.request("POST", "/counters", msgspec.json.encode(batch), headers)
        requests += 1
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            print(f"server answered {response.status}: {body.decode(errors='replace')}")
            return 1
        sent += len(batch)
    conn.close()
    said = f"sent {sent} events to {args.url}"
    if args.idempotent:
        said += f", each of the {requests} requests with its own Idempotency-Key"
    print(said)
    return 0
