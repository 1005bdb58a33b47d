"""``python -m bench`` (``make bench``): the benchmark suite, beside the product, not in it.

Starts each server under test as a real process pinned to CPU 0, drives it from
CPU 1 over HTTP keep-alive on 127.0.0.1 (``wrk`` where installed, else an
asyncio generator), and runs five scenarios side by side against tophosts, the
ceiling (a bare ASGI app) and a naive raw-event baseline; then ``metrics``
(tophosts against itself without request-path metrics) and ``redis`` (the memory
store against Redis with one and two workers, on a throwaway ``redis-server``;
each of its rows says how it was pinned); ``accesslog`` (tophosts at its default
``--log-level info`` against ``warning``, and against access lines as one logging
record each); ``limits`` (the cost of an event at and past every limit, and the
event loop's lag while a snapshot is written); and, when asked for,
``instructions`` (user-space instructions per request under callgrind). Prints
tables, writes
``<out>/<name>.json`` and ``.md`` and, with ``--plot``, PNG charts. Needs the
``bench`` extra.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

SCENARIO_NUMBERS = {
    "1": "single",
    "2": "bulk",
    "3": "query",
    "4": "mixed",
    "5": "cardinality",
    "6": "metrics",
    "7": "redis",
    "8": "instructions",
    "9": "accesslog",
    "10": "limits",
}
# 8 (callgrind, a few minutes, needs valgrind) runs only when asked for.
DEFAULT_SCENARIOS = "1,2,3,4,5,6,7,9,10"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a short run (about a minute) for tests"
    )
    parser.add_argument("--plot", action="store_true", help="also render PNG charts")
    parser.add_argument("--name", default=None, help="results name (default: full or quick)")
    parser.add_argument("--out", default="bench/results", help="results folder")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk where installed (auto), or the asyncio one",
    )
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help="comma-separated scenario numbers or names: 1 single, 2 bulk, 3 query, 4 mixed, "
        "5 cardinality, 6 metrics, 7 redis, 8 instructions, 9 accesslog, 10 limits (default: "
        "all but 8; redis only where redis-server is installed; 8 needs valgrind)",
    )
    parser.add_argument("--seconds", type=int, default=None, help="seconds per timed load run")
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        default=None,
        help="a tophosts source folder (the src/ of another checkout, e.g. from `git archive`): "
        "scenarios 1-3 then run tophosts against it, side by side, instead of against the "
        "ceiling and the naive baseline",
    )


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    words = ["python -m bench"]
    words += ["--quick"] * args.quick + ["--plot"] * args.plot
    if args.name:
        words.append(f"--name {args.name}")
    if args.generator != "auto":
        words.append(f"--generator {args.generator}")
    if args.scenarios != DEFAULT_SCENARIOS:
        words.append(f"--scenarios {args.scenarios}")
    if args.seconds:
        words.append(f"--seconds {args.seconds}")
    if args.baseline:
        words.append(f"--baseline {args.baseline}")
    return " ".join(words)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import msgspec
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bench import loadgen, report, scenarios, servers

    console = Console(width=max(Console().width, 110))
    try:
        chosen = [SCENARIO_NUMBERS.get(s.strip(), s.strip()) for s in args.scenarios.split(",")]
        unknown = [s for s in chosen if s not in scenarios.SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario {unknown[0]!r}; use 1-10 or a name")
        if "redis" in chosen and shutil.which("redis-server") is None:
            if args.scenarios != DEFAULT_SCENARIOS:
                raise RuntimeError("the redis scenario needs redis-server, which is not installed")
            chosen.remove("redis")
            console.print("[yellow]redis-server is not installed: no redis scenario[/]")
        if "instructions" in chosen and not all(
            shutil.which(tool) for tool in ("valgrind", "callgrind_control")
        ):
            raise RuntimeError("the instructions scenario needs valgrind, which is not installed")
        generator = loadgen.pick(args.generator)
    except (ValueError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.baseline:
        if not os.path.isdir(os.path.join(args.baseline, "tophosts")):
            print(f"bench: --baseline {args.baseline} holds no tophosts package", file=sys.stderr)
            return 2
        servers.BASELINE = os.path.abspath(args.baseline)
    plan = scenarios.QUICK if args.quick else scenarios.FULL
    if args.seconds:
        plan = dataclasses.replace(plan, seconds=args.seconds)
    name = args.name or ("quick" if args.quick else "full")
    pinned = servers.pin(0, servers.LOAD_CPU)
    console.print(
        f"bench [bold]{name}[/]: load generator [bold]{generator.name}[/]; "
        + (
            f"server pinned to CPU {servers.SERVER_CPU}, load to CPU {servers.LOAD_CPU}"
            + (" (redis: see each row's pinning)" if "redis" in chosen else "")
            if pinned
            else "[yellow]no CPU pinning on this machine[/]"
        )
    )
    started = time.time()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        compared = ("tophosts", "tophosts-baseline") if args.baseline else servers.TARGETS
        bench = scenarios.Bench(plan, generator, lambda text: None, compared)
        task = progress.add_task("starting", total=bench.steps(chosen))

        def step(text: str) -> None:
            if bench.started_steps:
                progress.advance(task)
            bench.started_steps += 1
            progress.update(task, description=text)

        bench.step = step
        results = bench.run(chosen)
        progress.advance(task)
    elapsed = time.time() - started
    target_rows = report.targets(results)
    document = {
        "name": name,
        "command": command(args),
        "quick": args.quick,
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "seconds": round(elapsed, 1),
        "machine": machine(),
        "generator": generator.name,
        "pinned": pinned,
        "plan": dataclasses.asdict(plan),
        "results": results,
        "targets": target_rows,
        "headline": report.headline(results),
    }
    console.print(
        'servers: tophosts; ceiling = a bare ASGI app answering {"status":"ok"} on the '
        "same uvicorn settings; naive = every raw event in a SortedList, scanned per query; "
        "tophosts, no metrics = tophosts with no metrics update on the request path"
    )
    report.show(console, results, target_rows)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{name}.json")
    with open(path, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n")
    with open(os.path.join(args.out, f"{name}.md"), "w") as md:
        md.write(report.markdown(results, target_rows))
    console.print(f"wrote {path} in {elapsed:.0f} s")
    if args.plot:
        for chart in report.plot(results, args.out, name):
            console.print(f"wrote {chart}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="The tophosts benchmark suite (make bench)."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
