"""The history bench (issue 16): what keeping the top hosts of every closed window costs.

Run from the repository root::

    .venv/bin/python -m bench.history_bench --quick      # about a minute
    .venv/bin/python -m bench.history_bench              # longer rounds

It measures, each in one run:

- ``GET /stats?at=`` on a frozen minute, and ``GET /stats/history`` of 60 minutes
  with ``limit=10``: p50/p99 over sequential keep-alive requests to a real server
  (memory store) whose history holds an hour of minutes of 1,000 hosts each; plain
  ``GET /stats`` beside them for scale;
- single-event ``POST /counter`` with history on (the default, 24 h) and with
  ``--retention 0``, two servers side by side, loaded by wrk in alternating rounds;
- the longest the event loop is held up while a window of 1M hosts freezes (a
  minute and its hour), in process on uvloop: the longest step, and the longest
  gap a task that only yields sees;
- the memory of 24 h of history at ``--history-top 100``: a store driven through
  26 hours of a fake clock, against the same store with history off, with names
  that repeat from minute to minute and with names that never do.

With ``--pin`` the server runs on CPU 0 and wrk (and this script) on CPU 1, as the
bench suite does; on a machine shared with other work, pinning makes each process
wait for its one CPU, so the trial runs leave it off. On a shared machine the
figures are noisy. Prints a Markdown table, and the
figures as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop
from tests.support.clock import FakeClock
from tests.support.servers import Server, with_history

from tophosts.store.memory import MemoryStore
from tophosts.windows import HOUR, MINUTE, Window, ends

SERVER_CPU, LOAD_CPU = 0, 1

_WRK_SCRIPT = """
-- Single events: 5 hosts of 1,000, stamped with the current second.
local hosts, n = {}, 0
for i = 1, 1000 do hosts[i] = string.format('"host%04d.example.com":1', i) end
local headers = {["Content-Type"] = "application/json"}
request = function()
  n = n + 1
  local parts = {}
  for j = 1, 5 do parts[j] = hosts[(n * 7 + j * 131) % 1000 + 1] end
  local body = '{"timestamp":' .. os.time() .. ',' .. table.concat(parts, ',') .. '}'
  return wrk.format("POST", "/counter", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"seconds":%f,"non2xx":%d,"errors":%d}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


CPUS = os.sched_getaffinity(0)
PINNING = {"on": False}


def pin(pid: int, cpu: int) -> None:
    """With ``--pin``, keep ``pid`` on ``cpu`` (if this machine has two or more)."""
    if PINNING["on"] and len(CPUS) > 1 and cpu in CPUS:
        os.sched_setaffinity(pid, {cpu})


# -- queries ----------------------------------------------------------------------------


def timed_gets(port: int, paths: list[str], count: int) -> list[float]:
    """Seconds per request, ``count`` of them cycling through ``paths``, one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times: list[float] = []
    try:
        for i in range(count + 50):
            path = paths[i % len(paths)]
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            if i >= 50:  # the first ones warm up
                times.append(elapsed)
    finally:
        conn.close()
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)] * 1e3,
        "n": len(ordered),
    }


def queries(count: int) -> dict[str, Any]:
    """Query latencies against a server whose history holds an hour of minutes."""
    now = int(time.time())
    while 60 - now % 60 < 20:  # the minute must not turn while the history is built
        time.sleep(0.5)
        now = int(time.time())
    past = now - now % 60 - 60
    rnd = random.Random(16)
    events: list[dict[str, int]] = []
    for k in range(1, 61):
        start = past - 60 * k
        counts = {f"host{i:04}.example.com": rnd.randrange(1, 1000) for i in range(1000)}
        items = list(counts.items())
        events.extend(
            {"timestamp": start + j // 100, **dict(items[j : j + 100])} for j in range(0, 1000, 100)
        )
    with tempfile.TemporaryDirectory() as folder:
        server = with_history(str(Path(folder) / "snap"), events, "--log-level", "warning")
        try:
            pin(server.proc.pid, SERVER_CPU)
            frozen = [f"/stats?at={past - 60 * k}&limit=10" for k in range(2, 60)]
            history = [f"/stats/history?from={past - 3600}&to={past}&limit=10"]
            result = {
                "stats_at_frozen": percentiles(timed_gets(server.port, frozen, count)),
                "stats_history_60_minutes": percentiles(
                    timed_gets(server.port, history, count // 2)
                ),
                "stats_plain": percentiles(timed_gets(server.port, ["/stats"], count)),
            }
            check = json.loads(get(server.port, history[0]))
            assert len(check["windows"]) == 60
            assert all(len(w["top_hosts"]) == 10 for w in check["windows"][1:]), check
        finally:
            server.stop()
    return result


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


# -- ingest -----------------------------------------------------------------------------


def wrk_round(port: int, seconds: float, connections: int, script: str) -> float:
    proc = subprocess.Popen(
        [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script,
            f"http://127.0.0.1:{port}/counter",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    pin(proc.pid, LOAD_CPU)
    out, err = proc.communicate(timeout=seconds + 30)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk said nothing usable:\n{out}\n{err}")
    figures = json.loads(line[6:])
    if figures["non2xx"] or figures["errors"]:
        raise RuntimeError(f"wrk saw failures: {figures}")
    return float(figures["requests"] / figures["seconds"])


def ingest(rounds: int, seconds: float, connections: int) -> dict[str, Any]:
    """Single-event ingest, history on (24 h) and off (--retention 0), alternating."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed"}
    with tempfile.TemporaryDirectory() as folder:
        script = str(Path(folder) / "single.lua")
        Path(script).write_text(_WRK_SCRIPT)
        servers = {
            "on": Server("--log-level", "warning"),
            "off": Server("--log-level", "warning", "--retention", "0"),
        }
        rates: dict[str, list[float]] = {"on": [], "off": []}
        try:
            for server in servers.values():
                pin(server.proc.pid, SERVER_CPU)
                wrk_round(server.port, 1, connections, script)  # warm-up
            for i in range(rounds):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                for name in order:
                    rates[name].append(wrk_round(servers[name].port, seconds, connections, script))
        finally:
            for server in servers.values():
                server.stop()
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    pairs = [a / b for a, b in zip(rates["on"], rates["off"], strict=True)]
    return {
        "connections": connections,
        "seconds_per_round": seconds,
        "rounds": rates,
        "median_on": on,
        "median_off": off,
        "ratio_of_medians": on / off,
        "round_ratios": pairs,
    }


# -- freezing a window of a million hosts -------------------------------------------------


async def _freeze_stall(hosts: int, rising: bool, retention: int = 86400) -> dict[str, float]:
    """Freeze a minute of ``hosts`` hosts, then its hour, beside a task that only yields:
    the longest gap it sees is the longest the loop was held up. With ``retention`` 0,
    the windows are only dropped (freed a slice at a time), as without history."""
    clock = FakeClock(1_700_000_000 - 1_700_000_000 % HOUR + 30 * MINUTE)
    store = MemoryStore(clock=clock, retention=retention, history_top=100, max_tracked_hosts=hosts)
    minute = int(clock.now) - MINUTE
    if rising:  # the worst order for the selection: each host read beats all before it
        counts = {f"host{i:07}.example.com": i + 1 for i in range(hosts)}
    else:
        rnd = random.Random(1)
        counts = {f"host{i:07}.example.com": rnd.randrange(1, 10**6) for i in range(hosts)}
    store.add_now([(minute, counts)])
    del counts
    gaps: list[float] = []  # wall-clock time between two turns of the heartbeat
    cpu: list[float] = []  # this thread's CPU time between them: the loop's own work
    stop = False

    async def heartbeat() -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not stop:
            await asyncio.sleep(0)
            now, now_cpu = time.perf_counter(), time.thread_time()
            gaps.append(now - last)
            cpu.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    collections: list[float] = []  # CPU time of each full collection of the GC meanwhile
    began: list[float] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                began.append(time.thread_time())
            elif began:
                collections.append(time.thread_time() - began.pop())

    gc.callbacks.append(collected)
    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    out: dict[str, float] = {}
    hour = minute - minute % HOUR
    for window, start in ((Window.MINUTE, minute), (Window.HOUR, hour)):
        clock.set(ends(window.value, start))
        gaps.clear()
        cpu.clear()
        collections.clear()
        started = time.perf_counter()
        await store.freeze()  # selects the top K a step per turn, then frees the dict
        took = time.perf_counter() - started
        if retention:
            assert len(store.closed_now(window, [start], 100)[0]) == 100
        out[f"{window.label}_worst_gap_ms"] = max(gaps) * 1e3
        out[f"{window.label}_worst_cpu_ms"] = max(cpu) * 1e3
        out[f"{window.label}_full_gcs"] = len(collections)
        out[f"{window.label}_worst_full_gc_ms"] = max(collections, default=0) * 1e3
        out[f"{window.label}_turns"] = len(gaps)
        out[f"{window.label}_seconds"] = took
    stop = True
    await beat
    gc.callbacks.remove(collected)
    return out


def freeze_stall(hosts: int) -> dict[str, Any]:
    return {
        "random order": uvloop.run(_freeze_stall(hosts, False)),
        "rising order": uvloop.run(_freeze_stall(hosts, True)),
        "history off, only dropped": uvloop.run(_freeze_stall(hosts, False, 0)),
    }


# -- memory ---------------------------------------------------------------------------


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: (gc.collect(), tracemalloc.get_traced_memory()[0] - base)[1]
    finally:
        tracemalloc.stop()


async def _drive(retention: int, distinct: bool, hours: int) -> int:
    """The bytes a store holds after ``hours`` of minutes of 150 hosts each (names that
    repeat every minute, or never), freezing as the server does."""
    clock = FakeClock(1_700_000_000 - 1_700_000_000 % HOUR)
    with traced() as held:
        store = MemoryStore(clock=clock, retention=retention, history_top=100)
        for m in range(hours * 60):
            counts = {
                (f"m{m}-{i}.example.com" if distinct else f"host{i:03}.example.com"): 1
                + (i * 7919 + m) % 997
                for i in range(150)
            }
            store.add_now([(int(clock.now), counts)])
            clock.advance(MINUTE)
            await store.freeze()
        held_bytes = held()
        kept = len(store.dump_history())
        assert kept == (1440 + 24 if retention else 0), kept
        return held_bytes


def memory(hours: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for distinct in (False, True):
        on = uvloop.run(_drive(86400, distinct, hours))
        off = uvloop.run(_drive(0, distinct, hours))
        label = "distinct_names" if distinct else "repeated_names"
        out[label] = {"frozen_windows": 1440 + 24, "bytes_on": on, "bytes_off": off}
        out[label]["history_mb"] = (on - off) / 1e6
    return out


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (about a minute)")
    parser.add_argument("--json", type=Path, help="write the figures there too")
    parser.add_argument("--skip", default="", help="comma-separated: queries,ingest,freeze,memory")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, load on CPU 1")
    args = parser.parse_args(argv)
    PINNING["on"] = args.pin
    skip = set(filter(None, args.skip.split(",")))
    pin(os.getpid(), LOAD_CPU)
    quick = args.quick
    started = time.time()
    figures: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pinned": args.pin,
        "load_average_before": os.getloadavg(),
    }
    if "queries" not in skip:
        figures["queries"] = queries(2000 if quick else 10000)
    if "ingest" not in skip:
        figures["ingest"] = ingest(4 if quick else 8, 3 if quick else 10, 16)
    if "freeze" not in skip:
        figures["freeze"] = freeze_stall(1_000_000)
    if "memory" not in skip:
        figures["memory"] = memory(26)
    figures["load_average_after"] = os.getloadavg()
    figures["seconds"] = time.time() - started
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def report(f: dict[str, Any]) -> str:
    rows = ["| figure | target | measured |", "|---|---|---|"]
    if q := f.get("queries"):
        at, hist, plain = q["stats_at_frozen"], q["stats_history_60_minutes"], q["stats_plain"]
        rows.append(
            f"| `GET /stats?at=` a frozen minute, limit=10 | p99 ≤ 1 ms | "
            f"p99 {at['p99_ms']:.2f} ms (p50 {at['p50_ms']:.2f}; "
            f"plain `/stats`: p99 {plain['p99_ms']:.2f}) |"
        )
        rows.append(
            f"| `GET /stats/history` 60 minutes, limit=10 | p99 ≤ 5 ms | "
            f"p99 {hist['p99_ms']:.2f} ms (p50 {hist['p50_ms']:.2f}) |"
        )
    if (i := f.get("ingest")) and "skipped" not in i:
        on = ", ".join(f"{r:,.0f}" for r in i["rounds"]["on"])
        off = ", ".join(f"{r:,.0f}" for r in i["rounds"]["off"])
        rows.append(
            f"| single-event ingest, history on / `--retention 0` ({i['connections']} connections) "
            f"| ≥ 0.97 | {i['ratio_of_medians']:.3f} (medians {i['median_on']:,.0f} / "
            f"{i['median_off']:,.0f} req/s; rounds on: {on}; off: {off}) |"
        )
    if fr := f.get("freeze"):
        for order, x in fr.items():
            rows.extend(
                f"| a {w} of 1M hosts freezing ({order}): longest turn of the loop, "
                f"CPU (wall clock) | ≤ 10 ms | {x[f'{w}_worst_cpu_ms']:.1f} ms "
                f"({x[f'{w}_worst_gap_ms']:.1f} ms) over {x[f'{w}_turns']} turns, "
                f"{x[f'{w}_seconds']:.2f} s in all; {x[f'{w}_full_gcs']} full GC "
                f"collections meanwhile, the longest {x[f'{w}_worst_full_gc_ms']:.1f} ms |"
                for w in ("minute", "hour")
            )
    if m := f.get("memory"):
        for label, x in m.items():
            rows.append(
                f"| memory of 24 h of history, K = 100 ({label.replace('_', ' ')}) | ≤ 40 MB | "
                f"{x['history_mb']:.1f} MB for {x['frozen_windows']} frozen windows |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
