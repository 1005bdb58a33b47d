"""How long a batch at ``--max-body`` holds up every other request: single events
``POST /counter`` one at a time over one connection, alone and while a second
connection posts batches of exactly ``--max-body`` bytes back to back.

Five bodies: events of 5 hosts drawn from 10,000 (what a shipper sends);
events of distinct hosts (about 250,000 in 8 MiB, the dearest to apply);
the first body with its last event refused (a count of -1: 400); the first
body cut short by its closing bracket (not JSON: 400); and events of one host
each, about 32 bytes (some 260,000 events in 8 MiB, the most tuples). Each server
runs with the defaults of ``make run`` (``--log-level info``), pinned to the
server CPU; the probe and the feeder run here. With ``--baseline SRC`` (the
``src`` folder of another tophosts, e.g. ``git archive main | tar -x -C
/tmp/main``) a server of that code is measured in the same rounds,
alternating, the one not being timed stopped (``SIGSTOP``).

    python -m bench.body_lag --rounds 2 --seconds 5 --baseline /tmp/main/src

Everything runs against 127.0.0.1, bounded by ``--rounds`` and ``--seconds``.
Results go to stdout (a Markdown table) and ``bench/results/body_lag.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
from typing import Any

from bench import servers
from bench.data import batch_of_size
from bench.limits import LAG_LIMIT_MS, Clock, _loop, _stopped, beside, lag_figures, mid_hour_offset
from bench.servers import Server, Target
from tophosts.config import Settings
from tophosts.windows import HOUR

RESULTS = os.path.join(os.path.dirname(__file__), "results")
POOL = "5 hosts of 10,000 an event"
DISTINCT = "distinct hosts"
REFUSED = "5 hosts of 10,000, the last event refused"
CUT_SHORT = "5 hosts of 10,000, cut short (no closing bracket)"
TINY = "1 host of 5 an event, about 32 bytes each"


def tiny_batch(size: int, timestamp: int) -> bytes:
    """A batch of at most ``size`` bytes of one-host events, hosts ``t0`` to ``t4``."""
    event = b'{"timestamp":%d,"t%%d.example":1}' % timestamp
    n = (size - 2) // (len(event % 0) + 1)
    return b"[" + b",".join(event % (i % 5) for i in range(n)) + b"]"


def row(target: str, case: str, latencies: list[float], batches: int) -> dict[str, Any]:
    return {"target": target, "case": case, "batches": batches, **lag_figures(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per server and case")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--baseline", default=None, help="src folder of another tophosts")
    parser.add_argument("--out", default=RESULTS, help="folder for body_lag.json")
    parser.add_argument(
        "--max-body", type=int, default=Settings().max_body, help="the servers' --max-body"
    )
    args = parser.parse_args(argv)
    offset = mid_hour_offset()
    clock = Clock(offset)
    limit = args.max_body
    now = clock.now() - HOUR  # the past hour: nothing for the probe's minute to meet
    # Distinct: a pool of twice the host slots of the body (5 an event of 150 bytes or
    # so), from which nearly every event draws hosts no other event has.
    pools = {POOL: 10_000, DISTINCT: limit // 15}
    bodies = {case: batch_of_size(limit, now - 50, now - 5, n)[0] for case, n in pools.items()}
    # The same events but the last, a negative count: refused (400) at its last event.
    bad = b',{"timestamp":%d,"bad.example":-1}]' % now
    bodies[REFUSED] = batch_of_size(limit - len(bad), now - 50, now - 5)[0].rstrip()[:-1] + bad
    bodies[CUT_SHORT] = bodies[POOL].rstrip()[:-1]  # not JSON: 400
    bodies[TINY] = tiny_batch(limit, now - 5)  # about 260,000 events
    common = ["--clock-offset", f"{offset:.3f}", "--log-level", "info", "--max-body", str(limit)]
    targets: list[Target] = ["tophosts"]
    if args.baseline:
        servers.BASELINE = os.path.abspath(args.baseline)
        targets.append("tophosts-baseline")
    latencies: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    batches: dict[tuple[str, str], int] = collections.defaultdict(int)
    with contextlib.ExitStack() as started:
        running = {t: started.enter_context(Server(t, common)) for t in targets}
        for n in range(args.rounds):
            for target in targets[:: 1 if n % 2 == 0 else -1]:
                server = running[target]
                with contextlib.ExitStack() as paused:
                    for other in running.values():
                        if other is not server:
                            paused.enter_context(_stopped(other))
                    print(f"round {n + 1}: {target} alone", file=sys.stderr)
                    latencies[(target, "alone")] += _loop(server.port, clock, args.seconds)
                    for case, body in bodies.items():
                        print(f"round {n + 1}: {target} beside {case}", file=sys.stderr)
                        status = 400 if case in (REFUSED, CUT_SHORT) else 200
                        more, posted = beside(server.port, body, clock, args.seconds, status)
                        latencies[(target, case)] += more
                        batches[(target, case)] += posted
    rows = [row(*key, latencies[key], batches[key]) for key in latencies]
    command = " ".join(["python -m bench.body_lag", *(argv if argv is not None else sys.argv[1:])])
    results = {"command": command, "when": time.time(), "max_body": limit, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "body_lag.json"), "w") as out:
        json.dump(results, out, indent=2)
        out.write("\n")
    print(
        f"| server | POST /counter one at a time | requests | batches of {limit:,} B "
        f"| p50 ms | p99 ms | max ms | over {LAG_LIMIT_MS:g} ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        case = "alone" if r["case"] == "alone" else f"beside batches, {r['case']}"
        print(
            f"| {r['target']} | {case} | {r['requests']:,} | {r['batches']} | {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['max_ms']} | {r['over_limit']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
