"""Quick single-event ingest throughput: memory vs Redis, 1 and 2 workers, in one run.

    .venv/bin/python bench/redis_quick.py [--duration 10] [--connections 50]

Starts a throwaway redis-server (or uses --redis-url), then for each setup a
``tophosts serve`` on 127.0.0.1 and ``wrk`` posting one-host events to
``POST /counter`` for --duration seconds after a short warm-up. The setups
take turns for --rounds rounds, so that noise from whatever else the machine
is doing spreads over all of them; the medians decide. Prints req/s, latency
and the ratios the targets are about. Everything stays on this machine and
stops on its own; a run takes about rounds x 3 x (duration + warmup + 2) s.

This is a stopgap until the bench suite (``python -m tophosts bench``) covers
the Redis store.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# One event per request, cycling over 1000 host names, stamped with the time
# wrk starts: the current minute, live for the whole run.
WRK_SCRIPT = """
local ts = os.time()
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"timestamp": %d, "host%d.example": 1}', ts, n % 1000)
  return wrk.format(nil, "/counter", nil, body)
end
"""

# A round is quiet when the rest of the machine used less CPU than this meanwhile.
QUIET = 0.1
TARGET_ONE_WORKER = 8_000
TARGET_SCALING = 1.3


@dataclass
class Result:
    setup: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    other_cores: float = float("nan")
    """CPU the rest of the machine used meanwhile, in cores: the noise in this figure."""


TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy() -> int:
    """Busy CPU ticks of the whole machine so far (Linux), or 0."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return user + nice + system + irq + softirq + steal


def process_busy(pid: int) -> int:
    """CPU ticks used by ``pid`` and its live children (the workers), or 0."""
    total = 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += process_busy(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy")


def start_redis(binary: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def parse_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, seconds: float, connections: int, threads: int) -> Result:
    out = subprocess.run(
        [
            *("wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"),
            *("--latency", "-s", str(script), url),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+([0-9.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([0-9.]+\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    if socket_errors:
        print(f"  wrk: {socket_errors.group(0)}", file=sys.stderr)
    return Result(
        "",
        rps,
        parse_ms(p50.group(1)) if p50 else float("nan"),
        parse_ms(p99.group(1)) if p99 else float("nan"),
        int(errors.group(1)) if errors else 0,
    )


def _children_busy() -> float:
    """CPU seconds used by the children we have waited for (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    store: str,
    workers: int,
    script: Path,
    args: argparse.Namespace,
    redis_prefix: str,
    redis_pids: list[int],
) -> Result:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tophosts", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--store", store, "--log-level", "warning"]
    command += ["--workers", str(workers), "--redis-prefix", redis_prefix]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(url)
        wrk(url, script, args.warmup, args.connections, args.threads)
        pids = [server.pid, *redis_pids]
        before = machine_busy(), sum(map(process_busy, pids)), _children_busy()
        started = time.monotonic()
        result = wrk(url, script, args.duration, args.connections, args.threads)
        elapsed = time.monotonic() - started
        after = machine_busy(), sum(map(process_busy, pids)), _children_busy()
        if before[0]:
            ours = (after[1] - before[1]) + (after[2] - before[2]) * TICK
            result.other_cores = max(0.0, after[0] - before[0] - ours) / TICK / elapsed
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    kind = "memory" if store == "memory" else "redis"
    result.setup = f"{kind}, {workers} worker{'s' if workers > 1 else ''}"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per setup")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per setup")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="turns each setup takes")
    parser.add_argument("--redis-url", default=None, help="use this Redis, not a throwaway one")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120 or not 0 <= args.warmup <= 30 or not 1 <= args.rounds <= 10:
        parser.error("--duration must be 1..120 s, --warmup 0..30 s and --rounds 1..10")

    for tool in ("wrk", "redis-server"):
        if tool == "redis-server" and args.redis_url:
            continue
        if shutil.which(tool) is None:
            print(f"redis_quick: {tool} is not installed", file=sys.stderr)
            return 2

    redis_proc = None
    redis_url = args.redis_url
    if redis_url is None:
        redis_proc, redis_url = start_redis(shutil.which("redis-server") or "redis-server")
    redis_pids = [redis_proc.pid] if redis_proc is not None else []
    runs: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        prefix = f"bench{os.getpid()}"
        try:
            for round_ in range(1, args.rounds + 1):
                for store, workers in (("memory", 1), (redis_url, 1), (redis_url, 2)):
                    r = measure(store, workers, script, args, prefix, redis_pids)
                    runs.setdefault(r.setup, []).append(r)
                    print(
                        f"round {round_}  {r.setup:<18} {r.rps:>9,.0f} req/s   "
                        f"p50 {r.p50_ms:6.2f} ms   p99 {r.p99_ms:6.2f} ms   non-2xx {r.errors}   "
                        f"other load {r.other_cores:.2f} cores",
                        flush=True,
                    )
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)

    print(
        f"\nmedians of {args.rounds} rounds, {args.duration:g} s each, wrk -c {args.connections}:"
    )
    medians: dict[str, float] = {}
    for setup, results in runs.items():
        medians[setup] = statistics.median(r.rps for r in results)
        p99 = statistics.median(r.p99_ms for r in results)
        quiet = [r.rps for r in results if r.other_cores < QUIET]
        print(
            f"  {setup:<18} {medians[setup]:>9,.0f} req/s   p99 {p99:6.2f} ms   "
            + (
                f"quiet rounds: {statistics.median(quiet):,.0f} req/s ({len(quiet)})"
                if quiet
                else "no quiet round"
            )
        )
    memory, one, two = medians.values()
    print(
        f"redis 1 worker: {one:,.0f} req/s (target >= {TARGET_ONE_WORKER:,}), {one / memory:.2f}x"
        f" memory\nredis 2 workers: {two / one:.2f}x one worker (target >= {TARGET_SCALING}x)"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} after the run")
    met = one >= TARGET_ONE_WORKER and two >= TARGET_SCALING * one
    failed = any(r.errors for results in runs.values() for r in results)
    return 0 if met and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
