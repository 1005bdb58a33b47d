"""What an event costs at a full hour, this code against another: two servers whose
current hour holds ``--max-tracked-hosts`` hosts, timed at the same time on the
one server CPU (:meth:`bench.scenarios.Bench.at_once`), for a known host's events
(200) and for new hosts' events (429). The figure is server CPU per request, as a
ratio of this code to the baseline's in the same round; the servers run as
``make run`` starts them but for the cap and a ``--clock-offset``.

    python -m bench.full_hour --baseline /tmp/main/src --rounds 6

``--baseline SRC``: the ``src`` folder of another tophosts (``git archive main |
tar -x -C /tmp/main``). Everything runs against 127.0.0.1, bounded by
``--rounds`` and ``--seconds``. Results go to stdout and ``full_hour.json`` in
``--out`` (``bench/results/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

from bench import servers
from bench.data import junk_batches
from bench.limits import KNOWN, Clock, _counters, _event, _post_event, mid_hour_offset
from bench.loadgen import Load, pick
from bench.scenarios import FULL, QUICK, Bench, post_all
from bench.servers import Server

RESULTS = os.path.join(os.path.dirname(__file__), "results")
CONNECTIONS = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="src folder of another tophosts")
    parser.add_argument("--cap", type=int, default=100_000, help="--max-tracked-hosts")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per case")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per round")
    parser.add_argument("--quick", action="store_true", help="0.3 s rounds (a smoke run)")
    parser.add_argument("--out", default=RESULTS, help="folder for full_hour.json")
    args = parser.parse_args(argv)
    servers.BASELINE = os.path.abspath(args.baseline)
    plan = QUICK if args.quick else dataclasses.replace(FULL, seconds=args.seconds, warmup=1)
    bench = Bench(plan, pick(), lambda label: print(label, file=sys.stderr))
    offset = mid_hour_offset()
    clock = Clock(offset)
    common = ["--max-tracked-hosts", str(args.cap), "--clock-offset", f"{offset:.3f}"]
    ratios: dict[str, list[float]] = {"known host (200)": [], "new host (429)": []}
    rounds: list[dict[str, Any]] = []
    with Server("tophosts", common) as mine, Server("tophosts-baseline", common) as base:
        for server in (mine, base):
            bench.step(f"filling an hour of port {server.port} with {args.cap:,} hosts")
            _post_event(server.port, _counters([_event(clock.fill_span()[0], KNOWN)]))
            post_all(server.port, junk_batches(0, args.cap - 1, *clock.fill_span()))
        for n in range(args.rounds):
            news = [_event(clock.now() - 5, f"new{i}.example") for i in range(64)]
            bodies = {"known host (200)": [_event(clock.now() - 5, KNOWN)], "new host (429)": news}
            for case, sent in bodies.items():
                bench.step(f"round {n + 1}: {case}")
                order = (mine, base) if n % 2 == 0 else (base, mine)
                timed = bench.at_once(
                    [(s, Load("POST", "/counter", CONNECTIONS, sent)) for s in order]
                )
                us = {
                    ("this" if s is mine else "baseline"): used / result.requests * 1e6
                    for s, (result, used) in zip(order, timed, strict=True)
                }
                non2xx = [result.non2xx for result, _ in timed]
                expected = 0 if case.endswith("(200)") else [r.requests for r, _ in timed]
                if non2xx != ([0, 0] if expected == 0 else expected):
                    raise RuntimeError(f"{case}: answers not as expected ({non2xx} non-2xx)")
                ratios[case].append(us["this"] / us["baseline"])
                rounds.append(
                    {"round": n + 1, "case": case, **{k: round(v, 1) for k, v in us.items()}}
                )
    rows: list[dict[str, Any]] = [
        {"case": case, "median": round(statistics.median(r), 2), "rounds": [round(x, 2) for x in r]}
        for case, r in ratios.items()
    ]
    command = " ".join(["python -m bench.full_hour", *(argv if argv is not None else sys.argv[1:])])
    results = {"command": command, "when": time.time(), "cap": args.cap, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "full_hour.json"), "w") as out:
        json.dump({**results, "cpu_us": rounds}, out, indent=2)
        out.write("\n")
    print(f"| at a full hour of {args.cap:,} | CPU per request, this / baseline | rounds |")
    print("|---|---:|---|")
    for row in rows:
        print(f"| {row['case']} | {row['median']} | {', '.join(map(str, row['rounds']))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
