"""Run the fuzz harnesses: ``python -m tests.fuzz <name|all> [--seconds N | --total N]``.

Each harness runs in a process of its own under atheris (libFuzzer), for
``-max_total_time`` seconds, starting from its committed seeds and regressions
and from a working corpus kept between runs (``--work``, default ``.fuzz/``).
A crasher (an input that raised, hung past ``--timeout`` or blew the memory
limit) is written into ``tests/fuzz/regressions/<name>/``, to be committed with
its fix. The exit status is 0 only if no harness found anything.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import CORPUS, HERE, REGRESSIONS, load, names

ROOT = HERE.parent.parent
_ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
"""How libFuzzer names what it writes to -artifact_prefix."""


@dataclass
class Result:
    name: str
    seconds: float
    returncode: int
    executions: int
    coverage: str
    crashers: list[Path]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.crashers


def child(name: str, argv: list[str]) -> None:
    """In the harness's own process: instrument it, then hand it to libFuzzer."""
    import atheris  # type: ignore[import-untyped]  # no type hints shipped

    # Coverage of our own code guides the fuzzer; instrumenting the standard
    # library and the dependencies too would only slow it down.
    with atheris.instrument_imports(include=["tophosts", "tests.fuzz"]):
        module = load(name)
    atheris.Setup([sys.argv[0], *argv], module.TestOneInput)
    atheris.Fuzz()


def run(name: str, seconds: int, work: Path, timeout: int, max_len: int, quiet: bool) -> Result:
    module = load(name)
    regressions = REGRESSIONS / name
    regressions.mkdir(parents=True, exist_ok=True)
    corpus = work / name
    corpus.mkdir(parents=True, exist_ok=True)
    before = set(regressions.iterdir())
    argv = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-max_len={max_len}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={regressions}/",
    ]
    dictionary = getattr(module, "DICTIONARY", None)
    if dictionary is not None:
        argv.append(f"-dict={HERE / dictionary}")
    # New inputs go to the first folder only: the working corpus, never the seeds.
    argv += [str(corpus), *(str(p) for p in (CORPUS / name, regressions) if p.is_dir())]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--child", name, "--", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    elapsed = time.monotonic() - started
    log = proc.stderr + proc.stdout
    executions = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    coverage = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+)", log, re.MULTILINE)
    crashers = sorted(
        path for path in set(regressions.iterdir()) - before if path.name.startswith(_ARTIFACTS)
    )
    result = Result(
        name,
        elapsed,
        proc.returncode,
        int(executions[-1]) if executions else 0,
        f"cov {coverage[-1][0]} ft {coverage[-1][1]}" if coverage else "cov ?",
        crashers,
    )
    if not result.ok and not quiet:
        sys.stderr.write(log[-6000:])
    return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        child(args[1], args[3:] if args[2:3] == ["--"] else args[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("name", help=f"a harness ({', '.join(names())}) or 'all'")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=int, default=60, help="per harness (default 60)")
    length.add_argument("--total", type=int, help="seconds for all of them, split evenly")
    parser.add_argument("--work", type=Path, default=ROOT / ".fuzz", help="working corpora")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--max-len", type=int, default=4096, help="longest input, in bytes")
    parser.add_argument("--quiet", action="store_true", help="no libFuzzer log on a finding")
    options = parser.parse_args(args)
    chosen = names() if options.name == "all" else [options.name]
    unknown = set(chosen) - set(names())
    if unknown:
        parser.error(f"no harness tests/fuzz/fuzz_{unknown.pop()}.py; there are: {names()}")
    seconds = options.seconds if options.total is None else max(1, options.total // len(chosen))
    failed = False
    for name in chosen:
        result = run(name, seconds, options.work, options.timeout, options.max_len, options.quiet)
        verdict = "ok" if result.ok else f"FOUND (exit {result.returncode})"
        print(
            f"{name}: {verdict}, {result.executions} executions in {result.seconds:.0f} s "
            f"({seconds} s asked), {result.coverage}",
            flush=True,
        )
        for path in result.crashers:
            print(f"  crasher {path.relative_to(ROOT)}: {path.read_bytes()[:200]!r}", flush=True)
        failed |= not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
