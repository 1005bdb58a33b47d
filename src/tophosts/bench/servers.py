"""Servers under test as real processes, pinned to one CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Literal

Target = Literal["tophosts", "ceiling", "naive"]
TARGETS: tuple[Target, ...] = ("tophosts", "ceiling", "naive")
LABELS: dict[Target, str] = {
    "tophosts": "tophosts",
    "ceiling": "ceiling",  # a bare ASGI app on the same stack
    "naive": "naive",  # raw events in a SortedList
}

SERVER_CPU = 0
LOAD_CPU = 1


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` (0: this process) to ``cpu``; False where that cannot be done."""
    if not can_pin():
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(target: Target, port: int) -> list[str]:
    if target == "tophosts":
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
            "warning",
        ]
    return [sys.executable, "-m", "tophosts.bench.apps", target, "--port", str(port)]


class Server:
    """One server under test: started pinned to ``SERVER_CPU``, stopped on exit."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.port = free_port()
        # A file, not a pipe: a chatty server must never block on a full pipe.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command(target, self.port), stdout=subprocess.DEVNULL, stderr=self._log
        )
        self.pinned = pin(self.proc.pid, SERVER_CPU)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")
                raise RuntimeError(f"{self.target} server exited at start:\n{err}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.target} server did not become ready in {timeout:.0f} s")

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
        """User + system CPU time the server has used so far (0 where there is no /proc)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of stat(5), counted after the ")" that ends the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
