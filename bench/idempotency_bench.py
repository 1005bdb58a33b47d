"""What an ``Idempotency-Key`` costs (issue 13): ingest with and without keys, side by
side in one run, and the memory store's bytes per key.

1. Throughput. One tophosts server (pinned to CPU 0 where it can be) is driven by
   wrk (pinned to CPU 1) in alternating rounds: ``POST /counter`` with one event
   (5 hosts of 1,000) per request, and ``POST /counters`` with 1,000 events per
   request, each without a key and with a new key on every request. wrk builds
   every request in its Lua script in both arms, so that the arms differ by the
   header alone. The figure is the median of the rounds; the ratio is keys over
   no keys. With ``--baseline SRC`` (the ``src`` folder of another tophosts, e.g.
   ``git archive main | tar -x -C /tmp/main``) a server of that code takes part in
   the no-key rounds too, for the cost of this branch to requests without a key.
2. Instructions (with ``--instructions N``): the same loads, one request at a time
   over one keep-alive connection, to a server under ``valgrind --tool=callgrind``:
   user-space instructions per request, which busy neighbours cannot move (the
   kernel's socket work, the same in every arm, is not in them). N single events
   and N/20 bulk requests per arm; with ``--baseline``, for that code's no-key arm
   too.
3. Memory. In this process, a memory store is given ``--keys`` keyed requests whose
   event is expired (so that only keys are kept), and the bytes per key are taken
   from tracemalloc and from the resident set size.

    python bench/idempotency_bench.py --rounds 3 --seconds 3 --keys 1000000 \
        --instructions 2000 --baseline /tmp/main/src

Everything runs against 127.0.0.1, bounded by ``--rounds`` and ``--seconds``.
Results go to stdout (a Markdown table) and ``bench/results/idempotency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support: the servers the tests, bench and drills share

from tests.support.servers import Server  # noqa: E402

from bench.servers import pin  # noqa: E402
from tophosts import idempotency  # noqa: E402
from tophosts.store.memory import MemoryStore  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SERVER_CPU, LOAD_CPU = 0, 1
HOSTS = [f"h{i:04}.bench" for i in range(1000)]

LUA = """
-- idempotency bench: cycle through bodies; a new Idempotency-Key per request if keyed.
local bodies, n, i, count = {}, 0, 0, 0
local path, keyed, prefix
init = function(args)
  path, keyed, prefix = args[1], args[2] == "key", args[4]
  local f = assert(io.open(args[3], "r"))
  for line in f:lines() do
    n = n + 1
    bodies[n] = line
  end
  f:close()
  i = math.random(n) - 1
end
request = function()
  i = i % n + 1
  local headers = {["Content-Type"] = "application/json"}
  if keyed then
    count = count + 1
    headers["Idempotency-Key"] = prefix .. count
  end
  return wrk.format("POST", path, headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%f,"non2xx":%d,"errors":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(99)))
end
"""


def event(rng: random.Random, ts: int) -> dict[str, int]:
    out = {"timestamp": ts}
    for host in rng.sample(HOSTS, 5):
        out[host] = rng.randint(1, 3)
    return out


def bodies(kind: str, rng: random.Random, ahead: int = 0) -> list[bytes]:
    """Request bodies stamped ``ahead`` seconds from now: 200 single events, or 16
    batches of 1,000."""
    ts = int(time.time()) + ahead
    if kind == "single":
        return [json.dumps(event(rng, ts), separators=(",", ":")).encode() for _ in range(200)]
    batch = [[event(rng, ts) for _ in range(1000)] for _ in range(16)]
    return [json.dumps(b, separators=(",", ":")).encode() for b in batch]


def wrk(url: str, kind: str, arm: str, seconds: float, folder: Path, run: str) -> dict[str, Any]:
    """One round of wrk; its figures."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    data = folder / f"{kind}.txt"
    data.write_bytes(b"\n".join(bodies(kind, random.Random(7))) + b"\n")
    script = folder / "bench.lua"
    script.write_text(LUA)
    path, connections = ("/counter", 16) if kind == "single" else ("/counters", 4)
    command = [binary, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    command += ["--", path, arm, str(data), f"{run}-"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        preexec_fn=lambda: pin(0, LOAD_CPU) and None,
        check=False,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk said: {done.stdout}{done.stderr}")
    figures: dict[str, Any] = json.loads(line.removeprefix("BENCH "))
    per = 1 if kind == "single" else 1000
    figures["rps"] = figures["requests"] / figures["seconds"]
    figures["events_per_s"] = figures["rps"] * per
    if figures["non2xx"] or figures["errors"]:
        raise RuntimeError(f"{kind}/{arm}: {figures['non2xx']} non-2xx, {figures['errors']} errors")
    return figures


@contextlib.contextmanager
def servers(baseline: str | None, store: str) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        args = ("--log-level", "warning", "--store", store)
        started["this"] = Server(*args)
        if baseline:
            env = {"PYTHONPATH": baseline}
            started["baseline"] = Server(*args, env=env)
        for server in started.values():
            pin(server.proc.pid, SERVER_CPU)
        yield started
    finally:
        for server in started.values():
            server.stop()


def throughput(rounds: int, seconds: float, baseline: str | None, store: str) -> dict[str, Any]:
    rows: dict[str, dict[str, list[float]]] = {}
    run = os.urandom(4).hex()
    with servers(baseline, store) as running, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in ("single", "bulk"):
            arms = [("this", "none"), ("this", "key")]
            if baseline:
                arms.insert(0, ("baseline", "none"))
            figures = rows[kind] = {f"{s}/{a}": [] for s, a in arms}
            for r in range(rounds):
                for server, arm in arms if r % 2 == 0 else arms[::-1]:
                    prefix = f"{run}-{kind}-{r}"
                    got = wrk(running[server].url, kind, arm, seconds, folder, prefix)
                    figures[f"{server}/{arm}"].append(got["events_per_s"])
                    print(f"  {kind:6} round {r + 1} {server}/{arm}: {got['rps']:,.0f} req/s")
    out: dict[str, Any] = {}
    for kind, figures in rows.items():
        medians = {arm: statistics.median(values) for arm, values in figures.items()}
        out[kind] = {
            "rounds": figures,
            "median_events_per_s": medians,
            "keys_over_none": medians["this/key"] / medians["this/none"],
        }
        if baseline:
            out[kind]["none_over_baseline"] = medians["this/none"] / medians["baseline/none"]
    return out


def callgrind(env: dict[str, str] | None, keyed: bool, requests: int) -> dict[str, float]:
    """Instructions per request, single and bulk, of one server under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    loads = [("single", "/counter", requests), ("bulk", "/counters", max(1, requests // 20))]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tophosts-callgrind-") as tmp:
        dump = f"{tmp}/callgrind.out"
        wrapper = (valgrind, "--tool=callgrind", "--instr-atstart=no")
        server = Server(
            "--log-level",
            "warning",
            env=env,
            wrapper=(*wrapper, f"--callgrind-out-file={dump}"),
            ready_timeout=300,
        )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        sent = 0

        def post(path: str, body: bytes) -> None:
            nonlocal sent
            headers = {"content-type": "application/json"}
            if keyed:
                sent += 1
                headers["idempotency-key"] = f"callgrind-{sent}"
            conn.request("POST", path, body, headers)
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"answered {answer.status}: {data[:200]!r}")

        def control(*args: str) -> None:
            command = ["callgrind_control", *args, str(server.proc.pid)]
            subprocess.run(command, check=True, capture_output=True, timeout=120)

        try:
            for number, (kind, path, n) in enumerate(loads, 1):
                # Stamped ahead (within --max-skew), so that the events take the same
                # path, into their minute and hour, however long the load runs.
                payload = bodies(kind, random.Random(11), ahead=150)
                for i in range(min(200, 4 * n)):  # every path taken and warm
                    post(path, payload[i % len(payload)])
                control("--instr=on")
                control("--zero")
                for i in range(n):
                    post(path, payload[i % len(payload)])
                control("--dump")
                control("--instr=off")
                with open(f"{dump}.{number}") as counted:
                    totals = next(x for x in counted if x.startswith("totals:"))
                out[kind] = int(totals.split()[1]) / n
        finally:
            conn.close()
            server.stop(timeout=120)
    return out


def instructions(requests: int, baseline: str | None) -> dict[str, Any]:
    arms: dict[str, tuple[dict[str, str] | None, bool]] = {
        "this/none": (None, False),
        "this/key": (None, True),
    }
    if baseline:
        arms["baseline/none"] = ({"PYTHONPATH": baseline}, False)
    per = {}
    for arm, (env, keyed) in arms.items():
        print(f"  instructions: {arm} under callgrind ...")
        per[arm] = callgrind(env, keyed, requests)
    out: dict[str, Any] = {"per_request": per, "requests": requests}
    for kind in ("single", "bulk"):
        # Time follows instructions on a CPU-bound server: none / key is the throughput
        # ratio they would give.
        out[f"{kind}_none_over_key"] = per["this/none"][kind] / per["this/key"][kind]
        if baseline:
            out[f"{kind}_baseline_over_none"] = per["baseline/none"][kind] / per["this/none"][kind]
    return out


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(store: MemoryStore, n: int) -> None:
    """``n`` requests with keys of their own, each with one expired event: only its key
    is kept. The digests are made here, as the request path makes them."""
    for i in range(n):
        key = (idempotency.digest(b"bench-key-%d" % i), i & 0xFF_FFFF_FFFF)
        store.add_now([(0, {"h": 1})], key)


def memory(n: int) -> dict[str, Any]:
    """Bytes per key at ``n`` keys in a memory store: by tracemalloc, and by RSS."""
    gc.collect()
    before = rss()
    store = MemoryStore(max_idempotency_keys=n)
    fill(store, n)
    rss_per_key = (rss() - before) / n
    assert asyncio.run(store.sizes()).keys == n
    del store
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = MemoryStore(max_idempotency_keys=n)
    fill(store, n)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert asyncio.run(store.sizes()).keys == n
    return {
        "keys": n,
        "tracemalloc_bytes_per_key": (held - base) / n,
        "rss_bytes_per_key": rss_per_key,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per arm (alternating)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys for the memory figure")
    parser.add_argument("--store", default="memory", help="the servers' --store")
    parser.add_argument("--baseline", default=None, help="src folder of another tophosts")
    parser.add_argument(
        "--instructions", type=int, default=0, help="single events per arm under callgrind"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join(sys.argv), "when": time.time()}
    mem = got = None
    if args.keys:
        print(f"memory per key at {args.keys:,} keys ...")
        results["memory"] = mem = memory(args.keys)
    if args.rounds:
        print(f"throughput, {args.rounds} alternating rounds of {args.seconds:g} s ...")
        got = throughput(args.rounds, args.seconds, args.baseline, args.store)
        results["throughput"] = got
    counted = None
    if args.instructions:
        print(f"instructions, {args.instructions:,} single events per arm ...")
        results["instructions"] = counted = instructions(args.instructions, args.baseline)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idempotency.json").write_text(json.dumps(results, indent=2) + "\n")
    if got is not None:
        print()
        print("| ingest | arm | median | rounds |")
        print("|---|---|---|---|")
        for kind, row in got.items():
            unit = "req/s" if kind == "single" else "events/s"
            for arm, values in row["rounds"].items():
                shown = ", ".join(f"{v:,.0f}" for v in values)
                median = row["median_events_per_s"][arm]
                print(f"| {kind} | {arm} | {median:,.0f} {unit} | {shown} |")
        print()
        for kind, row in got.items():
            line = f"{kind}: keys / no keys = {row['keys_over_none']:.3f}"
            if "none_over_baseline" in row:
                line += f"; no keys, this / baseline = {row['none_over_baseline']:.3f}"
            print(line)
    if counted is not None:
        print()
        print("| instructions per request | " + " | ".join(counted["per_request"]) + " |")
        print("|---|" + "---:|" * len(counted["per_request"]))
        for kind in ("single", "bulk"):
            row = " | ".join(f"{per[kind] / 1000:,.1f}k" for per in counted["per_request"].values())
            print(f"| {kind} | {row} |")
        for kind in ("single", "bulk"):
            line = f"{kind}: instructions, no keys / keys = {counted[f'{kind}_none_over_key']:.3f}"
            if f"{kind}_baseline_over_none" in counted:
                ratio = counted[f"{kind}_baseline_over_none"]
                line += f"; no keys, baseline / this = {ratio:.3f}"
            print(line)
    if mem is not None:
        print(
            f"memory per key at {mem['keys']:,} keys: {mem['tracemalloc_bytes_per_key']:.1f} B "
            f"(tracemalloc), {mem['rss_bytes_per_key']:.1f} B (RSS)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
