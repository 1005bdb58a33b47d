"""Instructions per syslog line, counted by callgrind: the receiver against the ceiling.

    python bench/syslog_callgrind.py [--lines 2000,20000] [--kinds ceiling,read,tophosts]

Wall-clock rates on a shared machine are noise; instruction counts are not. Each
receiver runs under ``valgrind --tool=callgrind`` and reads the same nginx lines
(100 hosts, one second) from a real UDP socket on 127.0.0.1:

* ``ceiling``: a bare uvloop ``DatagramProtocol`` that counts datagrams (the
  bench's ceiling, as issue 14 defines it);
* ``read``: the bare read loop of tophosts' UDP listener (``add_reader``, then
  ``os.read`` up to 128 datagrams a turn, called by ``map``), counting datagrams:
  the floor of that way of receiving (not run unless asked for);
* ``tophosts``: the syslog :class:`~tophosts.syslog.receiver.Receiver` on the
  memory store, as ``tophosts serve --syslog udp://...`` runs it;
* ``tophosts-tcp``: the same with ``--syslog tcp://...``, the lines
  newline-framed on one connection (not run unless asked for).

The receiver is stopped (SIGSTOP) while the lines are queued in its socket, in
rounds of at most 5,000 (the receive buffer holds them all: the kernel's drops
must stay 0), then let go (SIGCONT) until the socket is empty, then SIGTERM:
it reads the lines in bursts, as a receiver that is behind does. The same run
is made with two numbers of lines; the difference of the two totals over the
difference of the lines is the cost of one line, start-up, warm-up and shutdown
cancelled out (the modules are compiled beforehand, so that neither run writes
the bytecode caches). The flush interval is an hour for tophosts, so that the one
flush (at shutdown) applies the same 100 (second, host) sums in both runs: a
flush costs per distinct (second, host) per 100 ms, not per line, and under
valgrind's slowdown a 100 ms timer would fire fifty times as often per line.

Only user-space instructions are counted. The kernel's share of a datagram
(taking it off the socket and copying it out) is about the same for every
receiver and is not in the figures, so the wall-clock ratio of two receivers is
closer to 1 than the ratio of their instructions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOSTS = 100
ROUND = 5000


def lines(n: int, second: int) -> list[bytes]:
    return [
        b"<190>Dec  1 13:55:32 vm tophosts: %d.%03d host%d.example.com 200"
        % (second, i % 1000, i % HOSTS)
        for i in range(n)
    ]


# -- the receivers, run under valgrind -----------------------------------------


async def _ceiling(port: int, stop: asyncio.Event) -> int:
    class Counting(asyncio.DatagramProtocol):
        n = 0

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.n += 1

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    transport, protocol = await loop.create_datagram_endpoint(Counting, sock=sock)
    print("ready", flush=True)
    await stop.wait()
    transport.close()
    return protocol.n


async def _read(port: int, stop: asyncio.Event) -> int:
    """The bare read loop tophosts' UDP listener uses (``add_reader``, then ``os.read``
    until the socket is empty, 128 at most), counting datagrams."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    fd = sock.fileno()
    count = 0

    def readable() -> None:
        nonlocal count
        batch: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            batch.extend(map(os.read, itertools.repeat(fd, 128), itertools.repeat(65536, 128)))
        count += len(batch)

    loop.add_reader(fd, readable)
    print("ready", flush=True)
    await stop.wait()
    loop.remove_reader(fd)
    return count


async def _tophosts(port: int, stop: asyncio.Event, transport: str = "udp") -> int:
    from tophosts.store.memory import MemoryStore
    from tophosts.syslog.receiver import Receiver

    store = MemoryStore(max_skew=10**9)
    receiver = Receiver(f"{transport}://127.0.0.1:{port}", store, time.time, interval=3600)
    async with receiver:
        print("ready", flush=True)
        await stop.wait()
    lines = receiver.tallies[0].lines
    if lines["accepted"] != sum(lines.values()):
        print(f"not all accepted: {lines}", file=sys.stderr)
    return sum(lines.values())


def receive(kind: str, port: int) -> None:
    import uvloop

    async def main() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if kind == "tophosts-tcp":
            return await _tophosts(port, stop, "tcp")
        return await {"ceiling": _ceiling, "read": _read}.get(kind, _tophosts)(port, stop)

    print("received", uvloop.run(main()), flush=True)


# -- the driver ------------------------------------------------------------------


def udp_queue(port: int) -> tuple[int, int]:
    """(bytes queued, drops) of the UDP socket bound to ``port``, from /proc/net/udp."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[4].split(":")[1], 16), int(fields[12])
    raise RuntimeError(f"no UDP socket on port {port}")


def tcp_queues(port: int) -> int:
    """Bytes queued on the connections to or from ``port``, from /proc/net/tcp."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = {int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)}
        if port in ports and fields[3] == "01":  # ESTABLISHED
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            queued += tx + rx
    return queued


def send_tcp(proc: subprocess.Popen[bytes], port: int, todo: list[bytes]) -> None:
    """Send ``todo`` newline-framed on one connection, in rounds the socket buffers hold
    while the receiver is stopped."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sender:
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sender.connect(("127.0.0.1", port))
        sender.settimeout(60)
        for start in range(0, len(todo), ROUND // 2):
            proc.send_signal(signal.SIGSTOP)
            sender.sendall(b"".join(line + b"\n" for line in todo[start : start + ROUND // 2]))
            proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 600
            while tcp_queues(port) and time.monotonic() < deadline:
                time.sleep(0.01)


def run(kind: str, n: int, second: int, out: Path) -> int:
    """Total instructions of ``kind`` reading ``n`` lines."""
    from tests.support.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, __file__, "--receive", kind, "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"{kind} did not start: {proc.communicate()[1].decode()[-2000:]}")
    todo = lines(n, second)
    if kind == "tophosts-tcp":
        send_tcp(proc, port, todo)
    else:
        send_udp(proc, port, todo)
    drops = 0 if kind == "tophosts-tcp" else udp_queue(port)[1]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    got = re.search(rb"received (\d+)", stdout)
    if got is None or int(got.group(1)) != n or drops:
        raise RuntimeError(
            f"{kind}: {got and got.group(1)!r} of {n} lines read, {drops} dropped\n"
            + stderr.decode()[-2000:]
        )
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
    assert summary is not None
    return int(summary.group(1))


def send_udp(proc: subprocess.Popen[bytes], port: int, todo: list[bytes]) -> None:
    """Send ``todo``, a datagram a line, in rounds the receive buffer holds while the
    receiver is stopped."""
    n = len(todo)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.connect(("127.0.0.1", port))
        for start in range(0, n, ROUND):
            proc.send_signal(signal.SIGSTOP)
            for line in todo[start : start + ROUND]:
                sender.send(line)
            proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 600
            while udp_queue(port)[0] and time.monotonic() < deadline:
                time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="2000,20000", help="the two numbers of lines")
    parser.add_argument("--kinds", default="ceiling,tophosts")
    parser.add_argument("--keep", type=Path, help="keep callgrind's output files here")
    parser.add_argument("--receive", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive, args.port)
        return 0
    few, many = (int(x) for x in args.lines.split(","))
    second = int(time.time())
    # Compile what the receivers import first: a run that writes the bytecode caches
    # would count that work as its own.
    subprocess.run(
        [sys.executable, "-c", "import tophosts.store.memory, tophosts.syslog.receiver, uvloop"],
        check=True,
    )
    per_line: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tophosts-callgrind-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        for kind in args.kinds.split(","):
            totals = [run(kind, n, second, Path(tmp, f"{kind}-{n}.out")) for n in (few, many)]
            per_line[kind] = (totals[1] - totals[0]) / (many - few)
            print(
                f"{kind:10} {totals[0]:>14,} Ir for {few:,} lines, {totals[1]:>14,} for "
                f"{many:,}: {per_line[kind]:,.0f} Ir per line",
                flush=True,
            )
    if "ceiling" in per_line and "tophosts" in per_line:
        ratio = per_line["ceiling"] / per_line["tophosts"]
        print(
            f"tophosts / ceiling: {ratio:.2f} (the ceiling's Ir per datagram / tophosts' per line)"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
