"""The syslog receiver's figures, side by side in one run (issue 14).

    python bench/syslog_bench.py [--seconds 5] [--json bench/results/syslog.json]

Every receiver (tophosts, or the bare ceiling) runs pinned to CPU 0 and every
load generator to CPU 1 (``os.sched_setaffinity``), on 127.0.0.1 only, each
phase bounded in time (``--seconds``) and the senders in count too.

1. **ceiling**: a bare uvloop ``DatagramProtocol`` that only counts datagrams.
2. **udp**: tophosts ``--syslog udp://...``, nginx lines sent as fast as the
   senders can; lines read per second (those the kernel dropped are not).
3. **drops at 150k/s**: the same at a paced 150,000 lines/s, default
   ``--syslog-rcvbuf``; the kernel's drops on the socket.
4. **tcp**: tophosts ``--syslog tcp://...``, newline-delimited lines on a few
   connections; lines read per second.
5. **http beside syslog**: lines paced at 100,000/s while one client loops
   ``GET /stats`` (its latency) and another posts single events (refusals).

The UDP senders call ``sendmmsg(2)`` through ctypes (the standard library has
no binding) with a precomputed batch of datagrams, so one sender process on
CPU 1 can offer far more than a receiver on CPU 0 takes; the report says, per
phase, what the senders offered, so a phase limited by them shows it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, TypeAlias

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import Server, free_port  # noqa: E402

SERVER_CPU, LOAD_CPU = 0, 1
HOSTS = 100
BATCH = 256
Value: TypeAlias = "Synchronized[int]"


# -- pinning -------------------------------------------------------------------


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Run the block (and what it spawns) on ``cpu`` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- lines ---------------------------------------------------------------------


def nginx_lines(n: int = 1000) -> list[bytes]:
    now = time.time()
    return [
        b"<190>Dec  1 13:55:32 vm tophosts: %.3f host%d.example.com 200" % (now, i % HOSTS)
        for i in range(n)
    ]


# -- UDP sender: sendmmsg through ctypes --------------------------------------


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def udp_sender(port: int, rate: float, seconds: float, sent: Value, start: Value) -> None:
    """Send nginx lines to ``port`` for ``seconds``: at ``rate`` per second, or as fast
    as possible when ``rate`` is 0; count them in ``sent``."""
    os.sched_setaffinity(0, {LOAD_CPU})
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int]
    lines = nginx_lines(BATCH)
    buffers = [ctypes.create_string_buffer(line, len(line)) for line in lines]
    iovecs = (_Iovec * BATCH)()
    messages = (_Mmsghdr * BATCH)()
    for i, buf in enumerate(buffers):
        iovecs[i].iov_base = ctypes.cast(buf, ctypes.c_void_p)
        iovecs[i].iov_len = len(lines[i])
        messages[i].msg_hdr.msg_iov = ctypes.pointer(iovecs[i])
        messages[i].msg_hdr.msg_iovlen = 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect(("127.0.0.1", port))
    fd = sock.fileno()
    while not start.value:
        time.sleep(0.001)
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    limit = int(rate * seconds) if rate else 10**12
    while count < limit:
        now = time.perf_counter()
        if now >= deadline:
            break
        if rate:
            ahead = count / rate - (now - began)
            if ahead > 0.0005:
                time.sleep(ahead)
        n = sendmmsg(fd, messages, BATCH, 0)
        if n > 0:
            count += n
    sent.value = count


def tcp_sender(port: int, seconds: float, sent: Value, start: Value) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    chunk = b"".join(line + b"\n" for line in nginx_lines(4096))
    per_chunk = 4096
    sock = socket.create_connection(("127.0.0.1", port))
    while not start.value:
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    count = 0
    with contextlib.suppress(OSError):
        while time.perf_counter() < deadline:
            sock.sendall(chunk)
            count += per_chunk
    sent.value = count
    sock.close()


# -- HTTP clients: plain keep-alive sockets, so the client costs little -------


def _http(sock: socket.socket, request: bytes) -> int:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed")
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def stats_poller(port: int, seconds: float, out: Any, start: Value) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    sock = socket.create_connection(("127.0.0.1", port))
    request = b"GET /stats?stats_type=minute HTTP/1.1\r\nHost: x\r\n\r\n"
    while not start.value:
        time.sleep(0.001)
    latencies, bad = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        status = _http(sock, request)
        latencies.append(time.perf_counter() - began)
        bad += status != 200
        time.sleep(0.002)
    out.put({"latencies": latencies, "bad": bad})


def ingest_poster(port: int, seconds: float, out: Any, start: Value) -> None:
    os.sched_setaffinity(0, {LOAD_CPU})
    sock = socket.create_connection(("127.0.0.1", port))
    while not start.value:
        time.sleep(0.001)
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = b'{"timestamp": %d, "http.example": 1}' % int(time.time())
        request = (
            b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status = _http(sock, request)
        statuses[status] = statuses.get(status, 0) + 1
        time.sleep(0.001)
    out.put({"statuses": statuses})


# -- the ceiling receiver ------------------------------------------------------


def ceiling_receiver(port: int, count: Value, ready: Value) -> None:
    os.sched_setaffinity(0, {SERVER_CPU})
    import asyncio

    import uvloop

    class Counting(asyncio.DatagramProtocol):
        n = 0

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.n += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind(("127.0.0.1", port))
        _, protocol = await loop.create_datagram_endpoint(Counting, sock=sock)
        ready.value = 1
        while True:
            await asyncio.sleep(0.05)
            count.value = protocol.n

    uvloop.run(main())


# -- reading the receivers ----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far. Lines per CPU-second is what
    a receiver would do with the core to itself, however busy the machine is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    out = {"lines": 0.0, "accepted": 0.0, "dropped": 0.0}
    for result, value in re.findall(
        r'tophosts_syslog_lines_total\{[^}]*result="(\w+)"\} (\S+)', text
    ):
        out["lines"] += float(value)
        if result == "accepted":
            out["accepted"] += float(value)
    for value in re.findall(r"tophosts_syslog_dropped_total\{[^}]*\} (\S+)", text):
        out["dropped"] += float(value)
    return out


def settle(url: str, timeout: float = 5.0) -> dict[str, float]:
    """Figures once the lines stop moving (the tables flushed)."""
    last = figures(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = figures(url)
        if now == last:
            return now
        last = now
    return last


# -- phases --------------------------------------------------------------------

ctx = multiprocessing.get_context("spawn")


def start_senders(
    target: Any, args_list: list[tuple[Any, ...]]
) -> tuple[list[Any], list[Value], Value]:
    start: Value = ctx.Value("b", 0)
    counts: list[Value] = []
    procs = []
    for args in args_list:
        sent: Value = ctx.Value("q", 0)
        counts.append(sent)
        proc = ctx.Process(target=target, args=(*args, sent, start))
        proc.start()
        procs.append(proc)
    return procs, counts, start


def tophosts(*args: str) -> Server:
    with pinned(SERVER_CPU):
        return Server(*args)


def phase_ceiling(seconds: float, processes: int) -> dict[str, Any]:
    port = free_port()
    count: Value = ctx.Value("q", 0)
    ready: Value = ctx.Value("b", 0)
    receiver = ctx.Process(target=ceiling_receiver, args=(port, count, ready))
    receiver.start()
    while not ready.value:
        time.sleep(0.01)
    try:
        procs, counts, start = start_senders(udp_sender, [(port, 0, seconds)] * processes)
        time.sleep(0.5)
        assert receiver.pid is not None
        before, cpu = count.value, cpu_seconds(receiver.pid)
        began = time.perf_counter()
        start.value = 1
        time.sleep(seconds)
        got = count.value - before
        cpu = cpu_seconds(receiver.pid) - cpu
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.join(30)
        offered = sum(c.value for c in counts)
    finally:
        receiver.terminate()
        receiver.join()
    return {
        "lines_per_s": got / elapsed,
        "lines_per_cpu_s": got / cpu if cpu else 0,
        "cpu_share": cpu / elapsed,
        "offered_per_s": offered / seconds,
    }


def phase_udp(seconds: float, processes: int, rate: float = 0) -> dict[str, Any]:
    port = free_port()
    server = tophosts("--syslog", f"udp://127.0.0.1:{port}")
    try:
        per = rate / processes if rate else 0
        procs, counts, start = start_senders(udp_sender, [(port, per, seconds)] * processes)
        time.sleep(0.5)  # let the senders import and build their batches
        before, cpu = figures(server.url), cpu_seconds(server.proc.pid)
        began = time.perf_counter()
        start.value = 1
        time.sleep(seconds)
        during = figures(server.url)
        cpu = cpu_seconds(server.proc.pid) - cpu
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.join(30)
        after = settle(server.url)
        offered = sum(c.value for c in counts)
        read_during = during["lines"] - before["lines"]
        return {
            "lines_per_s": read_during / elapsed,
            "lines_per_cpu_s": read_during / cpu if cpu else 0,
            "cpu_share": cpu / elapsed,
            "offered_per_s": offered / seconds,
            "offered": offered,
            "read": after["lines"] - before["lines"],
            "dropped": after["dropped"] - before["dropped"],
            "rcvbuf_log": re.findall(r"syslog udp://\S+: (.*receive buffer.*)", server.output()),
        }
    finally:
        server.stop()


def phase_tcp(seconds: float, connections: int) -> dict[str, Any]:
    port = free_port()
    server = tophosts("--syslog", f"tcp://127.0.0.1:{port}")
    try:
        procs, counts, start = start_senders(tcp_sender, [(port, seconds)] * connections)
        time.sleep(0.5)
        before, cpu = figures(server.url), cpu_seconds(server.proc.pid)
        began = time.perf_counter()
        start.value = 1
        time.sleep(seconds)
        during = figures(server.url)
        cpu = cpu_seconds(server.proc.pid) - cpu
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.join(30)
        after = settle(server.url)
        read_during = during["lines"] - before["lines"]
        return {
            "lines_per_s": read_during / elapsed,
            "lines_per_cpu_s": read_during / cpu if cpu else 0,
            "cpu_share": cpu / elapsed,
            "offered": sum(c.value for c in counts),
            "read": after["lines"] - before["lines"],
        }
    finally:
        server.stop()


def phase_mixed(seconds: float, processes: int, rate: float) -> dict[str, Any]:
    port = free_port()
    server = tophosts("--syslog", f"udp://127.0.0.1:{port}")
    out = ctx.Queue()
    try:
        before = figures(server.url)
        start: Value = ctx.Value("b", 0)
        clients = [
            ctx.Process(target=stats_poller, args=(server.port, seconds, out, start)),
            ctx.Process(target=ingest_poster, args=(server.port, seconds, out, start)),
        ]
        for client in clients:
            client.start()
        per = rate / processes
        senders, counts, sender_start = start_senders(
            udp_sender, [(port, per, seconds)] * processes
        )
        time.sleep(0.5)
        start.value = 1
        sender_start.value = 1
        results = [out.get(timeout=seconds + 30) for _ in clients]
        for proc in [*clients, *senders]:
            proc.join(30)
        after = settle(server.url)
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        bad_stats = 0
        for result in results:
            latencies += result.get("latencies", [])
            bad_stats += result.get("bad", 0)
            for status, n in result.get("statuses", {}).items():
                statuses[str(status)] = statuses.get(str(status), 0) + n
        latencies.sort()
        return {
            "offered_per_s": sum(c.value for c in counts) / seconds,
            "read_per_s": (after["lines"] - before["lines"]) / seconds,
            "dropped": after["dropped"] - before["dropped"],
            "stats_requests": len(latencies),
            "stats_p50_ms": statistics.median(latencies) * 1000,
            "stats_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "stats_non_200": bad_stats,
            "ingest_statuses": statuses,
        }
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--senders", type=int, default=2, help="UDP sender processes (CPU 1)")
    parser.add_argument("--connections", type=int, default=4, help="TCP sender connections")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two CPUs: the receiver on CPU 0, the load on CPU 1", file=sys.stderr)
        return 2
    s, n = args.seconds, args.senders
    report: dict[str, Any] = {"seconds": s, "senders": n, "cpus": os.cpu_count()}
    report["ceiling"] = phase_ceiling(s, n)
    report["udp"] = phase_udp(s, n)
    report["udp_150k"] = phase_udp(s, n, rate=150_000)
    report["tcp"] = phase_tcp(s, args.connections)
    report["mixed_100k"] = phase_mixed(2 * s, n, rate=100_000)
    c, u, t, m = report["ceiling"], report["udp"], report["tcp"], report["mixed_100k"]
    r150 = report["udp_150k"]
    print("wall-clock rates (the receiver's share of CPU 0 in brackets); per CPU-second of it:")
    for name, row in (
        ("ceiling (bare uvloop, counts)", c),
        ("tophosts UDP", u),
        ("tophosts TCP", t),
    ):
        print(
            f"  {name:30} {row['lines_per_s']:>10,.0f} lines/s [{row['cpu_share']:.0%}]"
            f"  {row['lines_per_cpu_s']:>10,.0f} lines/CPU-s"
            + (f"  offered {row['offered_per_s']:,.0f}/s" if "offered_per_s" in row else "")
        )
    print(
        f"  tophosts UDP / ceiling: {u['lines_per_s'] / c['lines_per_s']:.2f} wall-clock, "
        f"{u['lines_per_cpu_s'] / c['lines_per_cpu_s']:.2f} per CPU-second"
    )
    print(
        f"UDP paced at 150k/s, default buffer: offered {r150['offered_per_s']:,.0f}/s, read "
        f"{r150['read']:,.0f} of {r150['offered']:,}, kernel drops {r150['dropped']:,.0f}"
    )
    print(
        f"HTTP beside syslog at {m['offered_per_s']:,.0f} lines/s (read {m['read_per_s']:,.0f}/s, "
        f"kernel drops {m['dropped']:,.0f}): /stats p50 {m['stats_p50_ms']:.2f} ms, p99 "
        f"{m['stats_p99_ms']:.2f} ms over {m['stats_requests']} requests; "
        f"POST /counter statuses {m['ingest_statuses']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
