"""Servers under test as real processes, pinned to one CPU (or not, where asked).

The processes themselves are started by :mod:`tests.support.servers`, which
the tests and the drills use too; this adds where they run, and the /proc
readings (CPU time of a process tree, of the whole machine) that say where the
CPU went during a timed run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Collection, Iterator, Sequence
from typing import Literal

from tests.support import servers as support

Target = Literal[
    "tophosts",
    "ceiling",
    "naive",
    "tophosts-nometrics",
    "tophosts-again",
    "tophosts-accesslog",
    "tophosts-accesslog-all",
    "tophosts-stdlog",
    "tophosts-baseline",
]
# The three servers that scenarios 1-5 compare side by side.
TARGETS: tuple[Target, ...] = ("tophosts", "ceiling", "naive")
LABELS: dict[Target, str] = {
    "tophosts": "tophosts",
    "ceiling": "ceiling",  # a bare ASGI app on the same stack
    "naive": "naive",  # raw events in a SortedList
    # tophosts with a NullMetrics: no request-path metrics update (bench.apps)
    "tophosts-nometrics": "tophosts, no metrics",
    # the same command as tophosts, a second process: the metrics scenario's control
    "tophosts-again": "tophosts, again",
    # tophosts at its default --log-level info and --access-log refused: a line per
    # refused request, a summary line of the rest every 10 s
    "tophosts-accesslog": "tophosts, --log-level info",
    # the same with --access-log all: one access line per request
    "tophosts-accesslog-all": "tophosts, info, --access-log all",
    # the same, each access line a logging record, as before they were queued
    "tophosts-stdlog": "tophosts, info, line by line",
    # another version of tophosts, from the source folder given as --baseline
    "tophosts-baseline": "tophosts, baseline",
}
# The tophosts source folder (a ``src`` with the ``tophosts`` package in it) the
# ``tophosts-baseline`` target runs, set from ``--baseline``.
BASELINE: str | None = None

SERVER_CPU = 0
LOAD_CPU = 1


# The CPUs this process could use when the bench started, before it pinned
# itself to LOAD_CPU: asking again later would see that one CPU only.
CPUS: frozenset[int] = frozenset(
    os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
)


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(CPUS) >= 2


def all_cpus() -> set[int]:
    """Every CPU the bench may use (not just those this thread is pinned to now)."""
    return set(CPUS)


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` (0: this process) to ``cpu``; False where that cannot be done."""
    if not can_pin():
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``--workers`` processes), from /proc."""
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                kids = [int(child) for child in children.read().split()]
        except OSError:
            continue
        for kid in kids:
            out += tree(kid)
    return out


def set_affinity(pid: int, cpus: Collection[int]) -> bool:
    """Confine every thread of ``pid`` and of its descendants to ``cpus``."""
    if not can_pin():
        return False
    done = False
    for proc in tree(pid):
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{proc}/task")]
        except OSError:
            threads = [proc]
        for thread in threads:
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread, set(cpus))
                done = True
    return done


def cpus_of(pid: int) -> list[int]:
    """The CPUs ``pid`` (0: this thread) and its descendants may run on, as now set."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    cpus: set[int] = set()
    for proc in tree(pid) if pid else [0]:
        with contextlib.suppress(OSError):
            cpus |= os.sched_getaffinity(proc)
    return sorted(cpus)


@contextlib.contextmanager
def affinity(cpus: Collection[int] | None) -> Iterator[None]:
    """Run the block on ``cpus`` (None: leave as is); the load generators it starts inherit them."""
    if cpus is None or not can_pin():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants (0 where there is no /proc)."""
    total = 0
    for proc in tree(pid):
        try:
            with open(f"/proc/{proc}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14 and 15 of stat(5), counted after the ")" that ends the name.
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (wrk runs)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far, every CPU together (0 without /proc)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def command(target: Target, args: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The server's command (to which ``--port P`` is added) and its arguments; tophosts
    logs at ``warning`` (no access lines) unless ``args`` say otherwise (a later
    ``--log-level`` wins), or the target is an ``info`` one."""
    info = ("tophosts-accesslog", "tophosts-accesslog-all", "tophosts-stdlog")
    level = "info" if target in info else "warning"
    if target == "tophosts-accesslog-all":
        args = ["--access-log", "all", *args]
    served = ("tophosts", "tophosts-again", "tophosts-baseline")
    if target in (*served, "tophosts-accesslog", "tophosts-accesslog-all"):
        return list(support.SERVE), ["--log-level", level, *args]
    levels = ["--log-level", level] * (target == "tophosts-stdlog")
    return [sys.executable, "-m", "bench.apps", target], [*levels, *args]


class Server(support.Server):
    """One server under test (:class:`tests.support.servers.Server`), pinned.

    Pinned to ``cpus`` (default: ``SERVER_CPU``), every process of it, at once
    (so that its start-up stays off the load's CPU) and again once it answers
    (for the ``--workers`` processes started meanwhile); ``cpus=None`` lets it
    run on every CPU. ``args`` go to ``tophosts serve`` (``--store``,
    ``--workers``, ...).
    """

    def __init__(
        self,
        target: Target,
        args: Sequence[str] = (),
        cpus: Collection[int] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.target = target
        self.cpus = set(cpus) if cpus is not None else {SERVER_CPU}
        self.pinned = False
        argv, rest = command(target, args)
        env = None
        if target == "tophosts-baseline":
            if BASELINE is None:
                raise RuntimeError("the tophosts-baseline target needs --baseline SRC")
            # Ahead of the editable install of this checkout on sys.path.
            env = {"PYTHONPATH": BASELINE}
        super().__init__(
            *rest,
            env=env,
            command=argv,
            wrapper=wrapper,
            ready_timeout=120.0 if wrapper else 30.0,
            answer_within=10.0 if wrapper else 1.0,
        )
        self.pinned = set_affinity(self.proc.pid, self.cpus)

    def started(self) -> None:
        self.pinned = set_affinity(self.proc.pid, self.cpus)

    @classmethod
    def unpinned(cls, target: Target, args: Sequence[str] = ()) -> Server:
        return cls(target, args, all_cpus())

    def cpus_now(self) -> list[int]:
        return cpus_of(self.proc.pid)

    @property
    def pinning(self) -> str:
        """Where this server ran, for the results."""
        if not self.pinned or self.cpus >= all_cpus():
            return "any CPU"
        return "CPU " + ",".join(map(str, sorted(self.cpus)))

    def rss_mb(self) -> float | None:
        """Resident set size in MiB, from /proc (None where there is no /proc)."""
        return rss_mb(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server (all its workers) has used so far."""
        return process_cpu_seconds(self.proc.pid)

    def worker_pids(self) -> list[int]:
        """The ``--workers`` processes (none for one worker, which is the server itself)."""
        if self.workers == 1:
            return []
        pids = []
        for pid in tree(self.proc.pid)[1:]:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    words = cmdline.read().split(b"\0")
            except OSError:
                continue
            # multiprocessing's resource tracker is a child too; it serves nothing.
            if not any(b"resource_tracker" in word for word in words):
                pids.append(pid)
        return pids

    def log_text(self) -> str:
        """What the server has written so far."""
        return self.output()

    def __enter__(self) -> Server:
        return self


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


RedisServer = support.RedisServer
"""The throwaway ``redis-server`` of the ``redis`` scenario: the tests' own."""
