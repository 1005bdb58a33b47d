"""Servers under test as real processes, pinned to one CPU (or not, where asked).

Also :class:`RedisServer`, the throwaway ``redis-server`` of the ``redis``
scenario, and the /proc readings (CPU time of a process tree, of the whole
machine) that say where the CPU went during a timed run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Sequence
from typing import Literal

Target = Literal[
    "tophosts",
    "ceiling",
    "naive",
    "tophosts-nometrics",
    "tophosts-again",
    "tophosts-accesslog",
    "tophosts-stdlog",
]
# The three servers that scenarios 1-5 compare side by side.
TARGETS: tuple[Target, ...] = ("tophosts", "ceiling", "naive")
LABELS: dict[Target, str] = {
    "tophosts": "tophosts",
    "ceiling": "ceiling",  # a bare ASGI app on the same stack
    "naive": "naive",  # raw events in a SortedList
    # tophosts with the request-path metrics updates replaced by no-ops (apps.NoMetrics)
    "tophosts-nometrics": "tophosts, no metrics",
    # the same command as tophosts, a second process: the metrics scenario's control
    "tophosts-again": "tophosts, again",
    # tophosts at its default --log-level info: one access line per request
    "tophosts-accesslog": "tophosts, --log-level info",
    # the same, each access line a logging record, as before they were queued
    "tophosts-stdlog": "tophosts, info, line by line",
}

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(target: Target, port: int, args: Sequence[str] = ()) -> list[str]:
    """The server's command line; tophosts logs at ``warning`` (no access lines) unless
    ``args`` say otherwise (a later ``--log-level`` wins), or the target is an ``info`` one."""
    level = "info" if target in ("tophosts-accesslog", "tophosts-stdlog") else "warning"
    if target in ("tophosts", "tophosts-again", "tophosts-accesslog"):
        return [
            sys.executable,
            "-m",
            "tophosts",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            level,
            *args,
        ]
    where = ["--port", str(port)] + ["--log-level", level] * (target == "tophosts-stdlog")
    return [sys.executable, "-m", "tophosts.bench.apps", target, *where, *args]


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """One server under test, stopped on exit.

    Pinned to ``cpus`` (default: ``SERVER_CPU``), every process of it once it
    answers; ``cpus=None`` lets it run on every CPU. ``args`` go to ``tophosts
    serve`` (``--store``, ``--workers``, ...); with ``--workers N`` it is ready
    only once fresh connections are answered promptly whichever worker the
    kernel hands them to.
    """

    def __init__(
        self,
        target: Target,
        args: Sequence[str] = (),
        cpus: Collection[int] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.target = target
        self.port = free_port()
        self.cpus = set(cpus) if cpus is not None else {SERVER_CPU}
        self.workers = int(args[list(args).index("--workers") + 1]) if "--workers" in args else 1
        # A file, not a pipe: a chatty server must never block on a full pipe.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # ``wrapper`` runs the server (valgrind, say: then it is slow to start).
        self.proc = subprocess.Popen(
            [*wrapper, *command(target, self.port, args)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        # Pinned at once (so that start-up stays off the load's CPU), and again
        # once ready, for the worker processes started meanwhile.
        self.pinned = set_affinity(self.proc.pid, self.cpus)
        if wrapper:
            self._wait_ready(timeout=120.0, answer_within=10.0)
        else:
            self._wait_ready()
        self.pinned = set_affinity(self.proc.pid, self.cpus)

    @classmethod
    def unpinned(cls, target: Target, args: Sequence[str] = ()) -> Server:
        return cls(target, args, all_cpus())

    def _wait_ready(self, timeout: float = 30.0, answer_within: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        # One answer per fresh connection; with several workers, enough of them
        # in a row that each worker has (all but surely) answered one.
        wanted = 1 if self.workers == 1 else 12 * self.workers
        answered = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")
                raise RuntimeError(f"{self.target} server exited at start:\n{err}")
            try:
                with urllib.request.urlopen(url, timeout=answer_within) as response:
                    if response.status == 200:
                        answered += 1
                        if answered >= wanted:
                            return
                        continue
            except (urllib.error.URLError, OSError):
                pass
            answered = 0
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.target} server did not become ready in {timeout:.0f} s")

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
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

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
        """What the server has written to stderr so far."""
        # pread: the server writes through the same file offset, which must not move.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 and a free port, without persistence."""

    def __init__(self, binary: str | None = None, timeout: float = 10.0) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                *(found, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start ({self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer in {timeout:.0f} s")

    def place(self, cpus: Collection[int]) -> bool:
        return set_affinity(self.proc.pid, cpus)

    def cpus(self) -> list[int]:
        return cpus_of(self.proc.pid)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        terminate(self.proc)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
