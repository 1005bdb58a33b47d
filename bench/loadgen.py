"""Load generators: ``wrk`` with a Lua script where it is installed, else asyncio.

Both drive closed-loop HTTP/1.1 keep-alive load (one request in flight per
connection) for a fixed time and report the same figures: completed requests,
non-2xx answers, socket errors and the latency distribution. Several loads can
run at once (the mixed scenario): with wrk as separate processes, with asyncio
as tasks of one event loop.

Also here: :class:`Conn`, a small blocking keep-alive client that the bench
uses to preload data and to time queries one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Protocol, cast

_LUA = """
-- tophosts bench: cycle through pre-built requests, report JSON when done.
local reqs, n, i = {}, 0, 0
init = function(args)
  local method, path = args[1], args[2]
  local headers = {["Content-Type"] = "application/json"}
  if args[3] then
    local f = assert(io.open(args[3], "r"))
    for line in f:lines() do
      n = n + 1
      reqs[n] = wrk.format(method, path, headers, line)
    end
    f:close()
  else
    n = 1
    reqs[1] = wrk.format(method, path)
  end
  i = math.random(n) - 1
end
request = function()
  i = i % n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%f,"non2xx":%d,"errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclasses.dataclass(frozen=True)
class Load:
    """Closed-loop load: ``connections`` clients cycling through ``bodies``.

    ``bodies`` may be a function, called for each run: events stamped when the
    run starts stay inside the past minute, however long the bench has run.
    ``threads``: wrk threads sharing the connections (the asyncio generator has one).
    """

    method: str
    path: str
    connections: int
    bodies: Sequence[bytes] | Callable[[], Sequence[bytes]] = ()
    threads: int = 1

    def payload(self) -> Sequence[bytes]:
        """The bodies of one run."""
        return self.bodies() if callable(self.bodies) else self.bodies


@dataclasses.dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Generator(Protocol):
    name: str

    def run(self, port: int, loads: Sequence[Load], seconds: int) -> list[LoadResult]: ...


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body or method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


# -- wrk ----------------------------------------------------------------------


class Wrk:
    def __init__(self, path: str) -> None:
        self.path = path
        version = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
        first = (version.stdout + version.stderr).split("\n", 1)[0]
        self.name = "wrk " + (first.split()[1] if len(first.split()) > 1 else "?")

    def run(self, port: int, loads: Sequence[Load], seconds: int) -> list[LoadResult]:
        with tempfile.TemporaryDirectory(prefix="tophosts-bench-") as tmp:
            script = os.path.join(tmp, "bench.lua")
            with open(script, "w") as f:
                f.write(_LUA)
            procs = []
            for n, load in enumerate(loads):
                args = [load.method, load.path]
                payload = load.payload()
                if payload:
                    bodies = os.path.join(tmp, f"bodies{n}.txt")
                    with open(bodies, "wb") as f:
                        f.write(b"\n".join(payload) + b"\n")
                    args.append(bodies)
                cmd = [
                    self.path,
                    f"-t{load.threads}",
                    f"-c{load.connections}",
                    f"-d{seconds}s",
                    "--timeout",
                    "60s",
                    "-s",
                    script,
                    f"http://127.0.0.1:{port}",
                    "--",
                    *args,
                ]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            results = []
            for proc in procs:
                out, err = proc.communicate(timeout=seconds + 120)
                results.append(_parse_wrk(out.decode(), err.decode()))
            return results


def _parse_wrk(out: str, err: str) -> LoadResult:
    for line in out.splitlines():
        if line.startswith("BENCH "):
            raw = json.loads(line[6:])
            return LoadResult(
                requests=raw["requests"],
                seconds=raw["seconds"],
                non2xx=raw["non2xx"],
                errors=raw["errors"],
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no result:\n{out}\n{err}")


# -- asyncio ------------------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.latencies = array("q")
        self.non2xx = 0
        self.errors = 0
        self.stop = False


class _Client(asyncio.Protocol):
    """One keep-alive connection: send, wait for the whole answer, send again."""

    def __init__(self, requests: Sequence[bytes], offset: int, tally: _Tally) -> None:
        self.requests = requests
        self.i = offset
        self.tally = tally
        self.buf = b""
        self.sent_at = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.tally.stop:
            self.transport.close()
            return
        self.i = (self.i + 1) % len(self.requests)
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.requests[self.i])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        if not self.tally.stop:
            self.tally.latencies.append(time.perf_counter_ns() - self.sent_at)
            if not head.startswith(b"http/1.1 2"):
                self.tally.non2xx += 1
        self.buf = self.buf[end + 4 + length :]
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None or not self.tally.stop:
            self.tally.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


class AsyncioLoad:
    """Pure-Python closed-loop generator (uvloop when installed)."""

    name = "python-asyncio"

    def run(self, port: int, loads: Sequence[Load], seconds: float) -> list[LoadResult]:
        try:
            import uvloop

            return uvloop.run(self._run(port, loads, seconds))
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            return asyncio.run(self._run(port, loads, seconds))

    async def _run(self, port: int, loads: Sequence[Load], seconds: float) -> list[LoadResult]:
        loop = asyncio.get_running_loop()
        tallies = [_Tally() for _ in loads]
        clients: list[_Client] = []
        for load, tally in zip(loads, tallies, strict=True):
            bodies = load.payload() or (b"",)
            requests = [request_bytes(load.method, load.path, body) for body in bodies]
            for n in range(load.connections):
                offset = n * len(requests) // load.connections
                _, client = await loop.create_connection(
                    lambda r=requests, o=offset, t=tally: _Client(r, o, t),  # type: ignore[misc]
                    "127.0.0.1",
                    port,
                )
                clients.append(client)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        # A run lasts until every load has had an answer too (a minute at most), so
        # that a short run of slow requests on a busy machine still measures one.
        while not all(t.latencies or t.errors for t in tallies):
            if time.perf_counter() - started > 60:
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        for tally in tallies:
            tally.stop = True
        # Answers still in flight finish (or time out) but are not counted.
        await asyncio.wait([c.closed for c in clients], timeout=60)
        for client in clients:
            if client.transport is not None and not client.transport.is_closing():
                client.transport.abort()
        results = []
        for tally in tallies:
            ms = sorted(v / 1e6 for v in tally.latencies)
            results.append(
                LoadResult(
                    requests=len(ms),
                    seconds=elapsed,
                    non2xx=tally.non2xx,
                    errors=tally.errors,
                    p50_ms=percentile(ms, 50),
                    p99_ms=percentile(ms, 99),
                    max_ms=ms[-1] if ms else 0.0,
                )
            )
        return results


def pick(kind: str = "auto") -> Generator:
    """``wrk`` where installed (or asked for), else the asyncio generator."""
    if kind in ("auto", "wrk"):
        path = shutil.which("wrk")
        if path:
            return Wrk(path)
        if kind == "wrk":
            raise RuntimeError("wrk is not installed; use --generator python")
    return AsyncioLoad()


# -- a blocking client for preloading and timing single queries ----------------


class Conn:
    """One keep-alive connection; ``request`` sends and reads one whole answer."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        while len(self.buf) < end + 4 + length:
            self._recv()
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        return int(head[9:12]), body

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def time_queries(port: int, path: str, max_n: int, budget: float) -> list[float]:
    """Latencies (ms) of up to ``max_n`` sequential GETs, stopping after ``budget`` s.

    At least one query is always timed, however slow.
    """
    raw = request_bytes("GET", path)
    out: list[float] = []
    with Conn(port) as conn:
        deadline = time.perf_counter() + budget
        while len(out) < max_n:
            t0 = time.perf_counter_ns()
            status, body = conn.request(raw)
            out.append((time.perf_counter_ns() - t0) / 1e6)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
            if time.perf_counter() > deadline:
                break
    return out
