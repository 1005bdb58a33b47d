"""The ``tophosts tail`` bench, side by side in one run (issue 15):

1. **parse**: parse and aggregate a generated nginx vhost log (the README's
   ``log_format vhost``) from a file with the shipper's own reader and batcher,
   on one core (target: >= 300k lines/s);
2. **goaccess**: GoAccess (Debian's 1.7) on the same file, with a virtual-host
   log format, on the same core: its wall time;
3. **end to end**: ``tophosts tail --from-start`` on one core into a
   memory-store ``tophosts serve`` on the other, from the first line read to
   ``/stats`` showing every line (target: >= 200k lines/s);
4. **backlog RSS**: the shipper's resident memory, sampled while it catches up a
   backlog (1 GB by default): it should stay flat.

    python bench/tail_bench.py                      # the whole bench (minutes)
    python bench/tail_bench.py --lines 500000 --backlog-mb 200   # a short trial

The lines are stamped in the current hour, up to now, so that the server (an
hour ahead with ``--clock-offset 3600``) holds them all in its past hour. The
file is read from the page cache (it was just written), as a shipper catching up
a recent backlog mostly does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import Server, free_port  # noqa: E402

from tophosts.formats import LOG_FILE_FORMATS  # noqa: E402
from tophosts.tail.batch import Aggregator, Batch, read_into  # noqa: E402

GOACCESS_FORMAT = '%v %h %^[%d:%t %^] "%r" %s %b "%R" "%u"'
"""The README's nginx ``log_format vhost`` in GoAccess's terms."""


def generate(path: Path, lines: int, hosts: int = 20, seed: int = 1) -> None:
    """``lines`` nginx vhost lines, stamped evenly from the start of this hour to now."""
    rng = random.Random(seed)
    names = [f"host{i}.example.com".encode() for i in range(hosts)]
    weights = [1 / (i + 1) for i in range(hosts)]
    now = int(time.time())
    start = now - now % 3600
    span = max(1, now - start)
    paths = [b"/", b"/index.html", b"/api/v1/items?page=2", b"/static/app.js"]
    agents = [b"curl/8.0", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"]
    last, stamp = -1, b""
    with path.open("wb") as out:
        block: list[bytes] = []
        for i in range(lines):
            second = start + i * span // lines
            if second != last:
                stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)).encode()
                last = second
            block.append(
                b'%s 10.0.%d.%d - - [%s] "GET %s HTTP/1.1" 200 %d "-" "%s"\n'
                % (
                    rng.choices(names, weights)[0],
                    i % 256,
                    i % 199,
                    stamp,
                    paths[i % 4],
                    600 + i % 100,
                    agents[i % 2],
                )
            )
            if len(block) == 100_000:
                out.write(b"".join(block))
                block.clear()
        out.write(b"".join(block))


def pin(core: int) -> None:
    os.sched_setaffinity(0, {core})


def parse(path: Path) -> dict[str, float]:
    """The shipper's reader and batcher over the whole file, batch after batch, in this process."""
    bad: list[bytes] = []
    aggregator = Aggregator(LOG_FILE_FORMATS["nginx-vhost"], lambda line, _: bad.append(line))
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    lines = batches = 0
    wall, cpu = time.perf_counter(), time.process_time()
    batch = Batch(0, opened=0.0)
    while batch.end < size:
        read_into(aggregator, fd, batch, 1 << 62)
        aggregator.body(batch)  # what would be posted
        lines += batch.lines
        batches += 1
        batch = Batch(batch.end, opened=0.0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    os.close(fd)
    assert not bad, bad[:3]
    return {"lines": lines, "batches": batches, "wall_s": wall, "cpu_s": cpu,
            "lines_per_s": lines / wall, "lines_per_cpu_s": lines / cpu}  # fmt: skip


def goaccess(path: Path, work: Path) -> dict[str, float]:
    program = shutil.which("goaccess")
    if program is None:
        return {"wall_s": float("nan")}
    command = [
        "taskset", "-c", "0", program, str(path), "--no-global-config", "--no-progress",
        f"--log-format={GOACCESS_FORMAT}", "--date-format=%d/%b/%Y", "--time-format=%T",
        "-o", str(work / "goaccess.json"),
    ]  # fmt: skip
    wall = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    report = json.loads((work / "goaccess.json").read_text())
    return {"wall_s": wall, "requests": report["general"]["total_requests"]}


def _tail(path: Path, url: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "taskset", "-c", "0", sys.executable, "-m", "tophosts", "tail", str(path),
            "--format", "nginx-vhost", "--url", url, "--state", str(state), "--from-start",
            "--log-level", "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _total(url: str) -> int:
    answer = httpx.get(url + "/stats", params={"stats_type": "hour", "limit": 1000}, timeout=10)
    return sum(answer.json()["top_hosts"].values())


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def end_to_end(path: Path, lines: int, work: Path, sample_rss: bool = False) -> dict[str, float]:
    """File to /stats: the shipper on core 0, a memory-store server on core 1."""
    port = free_port()
    server = Server("--clock-offset", "3600", "--log-level", "warning", port=port)
    subprocess.run(["taskset", "-cp", "1", str(server.proc.pid)], check=True, capture_output=True)
    state = work / f"tail-{port}.state"
    try:
        wall = time.perf_counter()
        shipper = _tail(path, server.url, state)
        rss: list[tuple[float, int]] = []
        total = 0
        while total < lines:
            if shipper.poll() is not None:
                raise RuntimeError(f"tophosts tail exited with {shipper.returncode}")
            time.sleep(0.25 if sample_rss else 0.1)
            if sample_rss:
                rss.append((time.perf_counter() - wall, _rss(shipper.pid)))
            total = _total(server.url)
            if time.perf_counter() - wall > 1800:
                raise RuntimeError(f"only {total} of {lines} lines counted after 30 minutes")
        wall = time.perf_counter() - wall
        shipper.terminate()
        shipper.wait(60)
    finally:
        server.stop()
    result: dict[str, float] = {"lines": lines, "counted": total, "wall_s": wall,
                                "lines_per_s": lines / wall}  # fmt: skip
    if rss:
        values = [r for _, r in rss]
        tenth = values[len(values) // 10 :]  # after start-up
        result |= {
            "rss_samples": len(values),
            "rss_min_mb": min(tenth) / 2**20,
            "rss_max_mb": max(tenth) / 2**20,
            "rss_last_mb": values[-1] / 2**20,
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5_000_000, help="lines of the parse file")
    parser.add_argument("--backlog-mb", type=int, default=1024, help="size of the RSS backlog")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tophosts-tail-bench-"))
    results: dict[str, object] = {"lines": args.lines, "backlog_mb": args.backlog_mb}
    try:
        log = work / "access.log"
        generate(log, args.lines)
        results["file_mb"] = log.stat().st_size / 2**20
        pin(0)
        results["parse"] = parse(log)
        results["goaccess"] = goaccess(log, work)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        results["end_to_end"] = end_to_end(log, args.lines, work)
        log.unlink()
        # The backlog: lines of about the same size, as many as make backlog-mb.
        per_line = results["file_mb"] * 2**20 / args.lines  # type: ignore[operator]
        backlog_lines = int(args.backlog_mb * 2**20 / per_line)
        backlog = work / "backlog.log"
        generate(backlog, backlog_lines, seed=2)
        results["backlog"] = end_to_end(backlog, backlog_lines, work, sample_rss=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
