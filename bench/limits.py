"""The ``limits`` scenario: what each limit costs when an adversary pushes it.

* ``--max-tracked-hosts``: a window filled to 0%, 50%, 99% and 100% of the cap
  with batches of junk hosts, then single events for a known host (and, when
  full, for a new host, which get 429). Each is timed at the same time as the
  known host's events on a second server, whose hour holds the known host
  alone: the reference, under the same machine at the same moment.
* ``--max-hosts``: events at the limit (accepted) and one host over it (400).
* ``--max-body``: bodies of exactly the limit (accepted) and one byte over (413);
  then single events one at a time, alone and while another connection posts
  bodies at the limit back to back: how long such a body holds the others up.
* The event loop's lag while a snapshot of many (host, window) pairs is written:
  a client loops ``POST /counter`` one request at a time against a server that
  snapshots every ``plan.lag_interval`` seconds and against one that does not,
  both holding the same pairs, in alternating rounds.

The servers run with ``--clock-offset`` so that their clock stands ten minutes
into an hour: whatever the wall clock, the filled window stays the current hour
for the whole scenario. Costs are server CPU time per request (what the
neighbours cannot move), next to the wall-clock rate.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bench.data import batch_of_size, distinct_batches, junk_batches, wide_event
from bench.loadgen import Conn, Load, request_bytes
from bench.loadgen import percentile as pct
from tophosts.config import Settings
from tophosts.windows import HOUR, MINUTE

if TYPE_CHECKING:
    from bench.scenarios import Bench, Row
    from bench.servers import Server

RATIO_LIMIT = 1.5
"""The most a request at (or past) a limit may cost against its reference."""
GRACE_S = 10.0
"""How long a timed step waits past its time, on a starved machine, for what it must
see: a batch answered beside the loop, a snapshot taken in the round logged."""
LAG_LIMIT_MS = 10.0
"""The most a snapshot may hold the event loop."""
CONNECTIONS = 16
KNOWN = "known.example"
_SNAPSHOT_LINE = re.compile(
    r"snapshot written to \S+ in ([0-9.]+) s by pid \d+ \(fork ([0-9.]+) ms, ([0-9.]+) MB, "
    r"copy-on-write ([0-9.]+|unknown)"
)


def mid_hour_offset() -> float:
    """A ``--clock-offset`` that puts the server ten minutes into an hour now."""
    t = time.time()
    return (t - t % HOUR + 600) - t


class Clock:
    """The server's clock, for stamping events: the wall clock plus its offset."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> int:
        return int(time.time() + self.offset)

    def fill_span(self) -> tuple[int, int]:
        """Stamps for filling: in the current hour, before the past minute (the hour's dict)."""
        now = self.now()
        hour = now - now % HOUR
        return hour, max(hour + 1, now - now % MINUTE - MINUTE)


def _event(timestamp: int, host: str) -> bytes:
    return f'{{"timestamp":{timestamp},"{host}":1}}'.encode()


def cost_row(result_row: Row) -> Row:
    """Per-request costs of a timed run: server CPU µs (the figure to compare) and wall µs."""
    per_cpu = result_row.get("rps_per_cpu_s")
    return {
        "cpu_us": round(1e6 / per_cpu, 1) if per_cpu else None,
        "wall_us": round(1e6 / result_row["rps"], 1) if result_row["rps"] else None,
    }


def _ratio(cost: float | None, reference: float | None) -> float | None:
    return round(cost / reference, 2) if cost and reference else None


class Limits:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.plan = bench.plan
        self.rows: list[Row] = bench.results["limits"]

    def run(self) -> None:
        from bench.servers import Server

        offset = mid_hour_offset()
        clock = Clock(offset)
        body = self.plan.limit_max_body
        for n, cap in enumerate(self.plan.limit_caps):
            args = ["--max-tracked-hosts", str(cap), "--clock-offset", f"{offset:.3f}"]
            args += ["--max-body", str(body)]
            # The reference: the same server with an empty store but for the known
            # host, timed at the same time as the filling one, each level.
            with Server("tophosts", args) as server, Server("tophosts", args) as reference:
                if n == 0:
                    # In the past hour, so that the current one stays empty for the
                    # first level; these need no more than 10,001 hosts tracked.
                    self.max_hosts(server, clock)
                    self.max_body(server, body, clock)
                self.tracked(server, reference, cap, clock)
        self.snapshot_lag(offset)

    def _time_beside(
        self,
        server: Server,
        bodies: Sequence[bytes],
        status: int,
        reference: Server,
        known: list[bytes],
        label: str,
    ) -> Row:
        """``bodies`` timed on ``server`` while ``reference`` takes ``known`` (a known host's
        events) at the same time (:meth:`Bench.at_once`); the row of ``server``, and the
        ratio of its CPU per request to the reference's in that same run."""
        self.bench.step(label)
        for port, sent, expected in ((server.port, bodies, status), (reference.port, known, 200)):
            for body in {*sent}:
                _expect(port, body, expected)
        loads = [(server, Load("POST", "/counter", CONNECTIONS, bodies))]
        loads.append((reference, Load("POST", "/counter", CONNECTIONS, known)))
        (result, used), (ref, ref_used) = self.bench.at_once(loads)
        from bench.scenarios import load_row

        row = load_row(result)
        row["rps_per_cpu_s"] = round(result.requests / used) if used > 0 else None
        row |= cost_row(row)
        ref_us = round(ref_used / ref.requests * 1e6, 1) if ref.requests else None
        return {
            **row,
            "reference_cpu_us": ref_us,
            "reference_non2xx": ref.non2xx,
            "ratio": _ratio(row["cpu_us"], ref_us),
        }

    def _time(self, server: Server, bodies: Sequence[bytes], label: str, status: int) -> Row:
        """A timed ``POST /counter`` load of ``bodies``, each first checked to get ``status``."""
        self.bench.step(label)
        for body in {*bodies}:
            _expect(server.port, body, status)
        load = Load("POST", "/counter", CONNECTIONS, bodies)
        [result], cpu = self.bench._timed(server, [load], short=True)
        from bench.scenarios import load_row

        row = {**load_row(result), **cpu}
        return {**row, **cost_row(row)}

    # -- --max-tracked-hosts --------------------------------------------------------

    def tracked(self, server: Server, reference: Server, cap: int, clock: Clock) -> None:
        """Fill the current hour level by level; time a known host's events at each, beside
        the same events on ``reference``, whose hour holds the known host alone."""
        _post_event(reference.port, _counters([_event(clock.fill_span()[0], KNOWN)]))
        filled = 0  # distinct hosts in the hour, the known one included
        for level in self.plan.limit_levels:
            target = cap * level // 100
            if target > filled:
                self.bench.step(f"limits: filling the hour to {level}% of {cap:,} hosts")
                first = 0 if filled == 0 else filled - 1  # junk numbering: j0.junk, ...
                fresh = target - filled
                if filled == 0:  # the known host goes in with the first fill
                    _post_event(server.port, _counters([_event(clock.fill_span()[0], KNOWN)]))
                    fresh -= 1
                    filled = 1
                from bench.scenarios import post_all

                post_all(server.port, junk_batches(first, fresh, *clock.fill_span()))
                filled = target
            known = [_event(clock.now() - 5, KNOWN)]
            label = f"limits: a known host's events at {level}% of {cap:,}, and empty"
            row = self._time_beside(server, known, 200, reference, known, label)
            self._tracked_row(cap, f"{level}% full, known host", level, 200, row)
        if filled >= cap:
            news = [_event(clock.now() - 5, f"new{i}.example") for i in range(64)]
            known = [_event(clock.now() - 5, KNOWN)]
            label = f"limits: new hosts' events at 100% of {cap:,}, and known ones, empty"
            row = self._time_beside(server, news, 429, reference, known, label)
            self._tracked_row(cap, "100% full, new host (429)", 100, 429, row)

    def _tracked_row(self, cap: int, case: str, level: int, status: int, row: Row) -> None:
        self.rows.append(
            {
                "limit": "max-tracked-hosts",
                "cap": cap,
                "case": case,
                "level_pct": level,
                "expected_status": status,
                **row,
            }
        )

    # -- --max-hosts ------------------------------------------------------------------

    def max_hosts(self, server: Server, clock: Clock) -> None:
        """Events of 100 hosts (the reference, per host), of the limit, and one over it."""
        limit = Settings().max_hosts
        stamp = clock.now() - HOUR
        cases = (
            ("100 hosts (reference)", 100, 200),
            (f"at the limit ({limit:,} hosts)", limit, 200),
            (f"one over ({limit + 1:,} hosts)", limit + 1, 400),
        )
        reference = at_limit = None
        for case, hosts, status in cases:
            body = wide_event(hosts, stamp)
            row = self._time(server, [body], f"limits: events of {hosts:,} hosts", status)
            per_host = round(row["cpu_us"] / hosts, 3) if row["cpu_us"] else None
            if hosts == 100:
                reference = per_host
                ratio = None
            elif hosts == limit:
                at_limit = row["cpu_us"]
                ratio = _ratio(per_host, reference)  # per host, against 100-host events
            else:
                ratio = _ratio(row["cpu_us"], at_limit)  # refusing against accepting
            self.rows.append(
                {
                    "limit": "max-hosts",
                    "cap": limit,
                    "case": case,
                    "hosts": hosts,
                    "expected_status": status,
                    **row,
                    "cpu_us_per_host": per_host,
                    "ratio": ratio,
                }
            )

    # -- --max-body -------------------------------------------------------------------

    def max_body(self, server: Server, limit: int, clock: Clock) -> None:
        """Batches of 1,000 events (the reference, per event), of exactly ``limit`` bytes,
        and a Content-Length one byte over it (refused before the body is read)."""
        now = clock.now() - HOUR
        from bench.data import Events

        small = Events(10_000, seed=5).batch(1000, now - 50, now - 5)
        full, events = batch_of_size(limit, now - 50, now - 5)
        samples = self.plan.limit_body_samples
        self.bench.step(f"limits: bodies of 1,000 events and of {limit:,} bytes")
        self.bench._quiet()
        ref_ms = _median_post(server.port, small, 5 * samples)
        at_ms = _median_post(server.port, full, samples)
        self.bench.step(f"limits: a Content-Length of {limit + 1:,} bytes")
        over_ms = _median_refused(server.port, limit + 1, 10 * samples)
        ref_per_event = ref_ms * 1000 / 1000
        at_per_event = at_ms * 1000 / events
        for case, ms, size, count, status, ratio in (
            ("1,000 events (reference)", ref_ms, len(small), 1000, 200, None),
            (
                f"at the limit ({limit:,} B)",
                at_ms,
                limit,
                events,
                200,
                _ratio(at_per_event, ref_per_event),
            ),
            (
                f"one byte over ({limit + 1:,} B)",
                over_ms,
                limit + 1,
                0,
                413,
                _ratio(over_ms, at_ms),
            ),
        ):
            self.rows.append(
                {
                    "limit": "max-body",
                    "cap": limit,
                    "case": case,
                    "body_bytes": size,
                    "events": count,
                    "expected_status": status,
                    "wall_us": round(ms * 1000, 1),
                    "wall_us_per_event": round(ms * 1000 / count, 3) if count else None,
                    "ratio": ratio,
                }
            )

        self.body_lag(server, full, clock)

    def body_lag(self, server: Server, full: bytes, clock: Clock) -> None:
        """Single events one at a time, alone and while another connection posts ``full``
        batches back to back: how long a large body holds the others up."""
        seconds = self.plan.lag_seconds
        self.bench.step(f"limits: POST /counter loop alone, then beside {len(full):,} B batches")
        self.bench._quiet()
        alone = _loop(server.port, clock, seconds)
        latencies, posted = beside(server.port, full, clock, seconds)
        for case, ms, batches in (
            ("single events alone", alone, 0),
            (f"single events beside {len(full):,} B batches", latencies, posted),
        ):
            self.rows.append(
                {
                    "limit": "max-body-lag",
                    "cap": len(full),
                    "case": case,
                    "batches": batches,
                    **lag_figures(ms),
                }
            )

    # -- the event loop while a snapshot is written ----------------------------------

    def snapshot_lag(self, offset: float) -> None:
        from bench.servers import Server

        plan = self.plan
        hosts = plan.lag_pairs  # distinct hosts in the hour: one (host, window) pair each
        clock = Clock(offset)
        common = [
            *("--max-tracked-hosts", str(2 * hosts), "--clock-offset", f"{offset:.3f}"),
            *("--log-level", "info"),  # the default, and the snapshot lines are at info
        ]
        with tempfile.TemporaryDirectory(prefix="tophosts-bench-snap-") as tmp:
            snap = [
                "--snapshot",
                f"{tmp}/snapshot",
                "--snapshot-interval",
                str(plan.lag_interval),
            ]
            with Server("tophosts", [*common, *snap]) as on, Server("tophosts", common) as off:
                for server in (on, off):
                    self.bench.step(f"limits: {hosts:,} hosts into a server for the lag loop")
                    from bench.scenarios import post_all

                    post_all(server.port, distinct_batches(hosts, *clock.fill_span()))
                latencies: dict[str, list[float]] = {"on": [], "off": []}
                written: list[tuple[str, ...]] = []
                for n in range(plan.lag_rounds):
                    for key, server in (("off", off), ("on", on))[:: 1 if n % 2 else -1]:
                        self.bench.step(
                            f"limits: POST /counter loop, snapshots {key}, round {n + 1}"
                        )
                        # Both servers share the server CPU: the one that snapshots
                        # (its writer too) is stopped while the other is timed.
                        with _stopped(on):
                            self.bench._quiet()
                        if key == "off":
                            with _stopped(on):
                                latencies[key] += _loop(server.port, clock, plan.lag_seconds)
                            continue
                        before = len(_SNAPSHOT_LINE.findall(on.log_text()))
                        latencies[key] += _loop(server.port, clock, plan.lag_seconds)
                        written += _SNAPSHOT_LINE.findall(on.log_text())[before:]
                if not written:
                    # On a starved machine the last round's snapshot may still be in
                    # its child: it was taken while the loop ran, so wait for its line.
                    written = _snapshot_lines(on, before, GRACE_S)
                rss = {key: server.rss_mb() for key, server in (("on", on), ("off", off))}
        for key in ("off", "on"):
            every = f"every {plan.lag_interval:g} s"
            row: Row = {
                "limit": "snapshot",
                "cap": hosts,
                "case": f"snapshots {every if key == 'on' else 'off'}",
                "pairs": hosts,
                # over_limit: the machine's outliers hit both servers; a snapshot
                # that held the loop would add one each.
                **lag_figures(latencies[key]),
                "rss_mb": _rounded(rss[key]),
            }
            if key == "on":
                row |= _snapshot_figures(written)
            self.rows.append(row)


def _snapshot_lines(server: Server, skip: int, within: float) -> list[tuple[str, ...]]:
    """The snapshot lines ``server`` logs past its first ``skip``, once there is one
    (or ``within`` seconds have passed)."""
    deadline = time.monotonic() + within
    while True:
        lines = _SNAPSHOT_LINE.findall(server.log_text())[skip:]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _snapshot_figures(written: list[tuple[str, ...]]) -> Row:
    """The snapshots a server logged: how many, the fork's stall, the child's time and copy."""
    if not written:
        return {"snapshots": 0}
    seconds = [float(w[0]) for w in written]
    fork = [float(w[1]) for w in written]
    copied = [float(w[3]) for w in written if w[3] != "unknown"]
    return {
        "snapshots": len(written),
        "fork_ms_max": max(fork),
        "fork_ms_median": round(statistics.median(fork), 2),
        "child_s_median": round(statistics.median(seconds), 3),
        "snapshot_mb": float(written[-1][2]),
        "copied_mib_median": round(statistics.median(copied), 1) if copied else None,
    }


@contextlib.contextmanager
def _stopped(server: Server) -> Iterator[None]:
    """``server`` and its children (a snapshot writer) stopped (SIGSTOP) for the block."""
    from bench.servers import tree

    os.kill(server.proc.pid, signal.SIGSTOP)  # first: then it forks no child meanwhile
    children = tree(server.proc.pid)[1:]
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in [*children, server.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _counters(events: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(events) + b"]"


def _expect(port: int, body: bytes, status: int) -> None:
    """``POST /counter`` ``body`` once; raise unless it gets ``status`` (200: counted)."""
    with Conn(port) as conn:
        got, answer = conn.request(request_bytes("POST", "/counter", body))
    if got != status or (status == 200 and answer != b'{"status":"ok"}'):
        raise RuntimeError(f"POST /counter answered {got} {answer[:200]!r}, not {status}")


def _post_event(port: int, body: bytes) -> None:
    with Conn(port) as conn:
        status, answer = conn.request(request_bytes("POST", "/counters", body))
    if status != 200:
        raise RuntimeError(f"POST /counters answered {status}: {answer[:200]!r}")


def _median_post(port: int, body: bytes, samples: int) -> float:
    """Median ms of ``samples`` sequential ``POST /counters`` of ``body`` (all 200)."""
    raw = request_bytes("POST", "/counters", body)
    out = []
    with Conn(port) as conn:
        conn.request(raw)  # warm
        for _ in range(samples):
            started = time.perf_counter()
            status, answer = conn.request(raw)
            out.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"POST /counters answered {status}: {answer[:200]!r}")
    return statistics.median(out)


def _median_refused(port: int, length: int, samples: int) -> float:
    """Median ms from sending the headers of a ``POST /counter`` declaring ``length`` bytes
    to its whole 413, each on a fresh connection (a 413 closes it)."""
    head = (
        f"POST /counter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    out = []
    for _ in range(samples):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            out.append((time.perf_counter() - started) * 1000)
        if not answer.startswith(b"HTTP/1.1 413 "):
            raise RuntimeError(f"expected 413, got {answer[:200]!r}")
    return statistics.median(out)


def lag_figures(latencies: Sequence[float]) -> Row:
    """How many answers, their p50, p99 and slowest (ms), and how many took longer
    than the stall limit."""
    ms = sorted(latencies)
    return {
        "requests": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "max_ms": round(ms[-1], 3) if ms else None,
        "over_limit": sum(1 for m in ms if m > LAG_LIMIT_MS),
    }


def beside(
    port: int, body: bytes, clock: Clock, seconds: float, status: int = 200
) -> tuple[list[float], int]:
    """Single-event latencies (ms) of :func:`_loop` while another connection posts
    ``body`` to ``/counters`` back to back, each answered ``status``; and how many of
    those batches were answered. A batch answered otherwise fails the run."""
    stop = threading.Event()
    posted = [0]
    failed: list[str] = []

    def feed() -> None:
        raw = request_bytes("POST", "/counters", body)
        with Conn(port) as conn:
            while not stop.is_set():
                got, answer = conn.request(raw)
                if got != status:
                    failed.append(f"POST /counters answered {got}: {answer[:200]!r}")
                    return
                posted[0] += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        # At least one batch must be answered beside the loop, however slow the machine.
        latencies = _loop(port, clock, seconds, until=lambda: bool(posted[0] or failed))
    finally:
        stop.set()
        feeder.join()
    if failed:
        raise RuntimeError(failed[0])
    return latencies, posted[0]


def _loop(
    port: int, clock: Clock, seconds: float, until: Callable[[], bool] = lambda: True
) -> list[float]:
    """Latencies (ms) of ``POST /counter`` sent one at a time for ``seconds``, and on
    until ``until()`` holds (for at most ``GRACE_S`` more)."""
    raw = request_bytes("POST", "/counter", _event(clock.now() - 5, KNOWN))
    out: list[float] = []
    with Conn(port) as conn:
        deadline = time.perf_counter() + seconds
        last = deadline + GRACE_S
        while (now := time.perf_counter()) < deadline or (now < last and not until()):
            started = time.perf_counter_ns()
            status, answer = conn.request(raw)
            out.append((time.perf_counter_ns() - started) / 1e6)
            if status != 200:
                raise RuntimeError(f"POST /counter answered {status}: {answer[:200]!r}")
    return out


def summary(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The targets of the limits scenario (for :func:`tophosts.bench.report.targets`)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["limit"] in ("snapshot", "max-body-lag") or row.get("ratio") is None:
            continue
        ratio = row["ratio"]
        status_ok = row.get("non2xx", 0) == 0 if row["expected_status"] == 200 else True
        out.append(
            {
                "figure": f"{row['limit']} {row['cap']:,}: {row['case']}",
                "target": f"<= {RATIO_LIMIT}x its reference",
                "measured": f"{ratio:.2f}x",
                "met": ratio <= RATIO_LIMIT and status_ok,
            }
        )
    lag = [r for r in rows if r["limit"] == "max-body-lag"]
    if len(lag) == 2:
        alone, beside = lag
        out.append(
            {
                "figure": f"event-loop lag while batches of {beside['cap']:,} B arrive",
                "target": f"no stall over {LAG_LIMIT_MS:.0f} ms",
                "measured": f"answers over {LAG_LIMIT_MS:.0f} ms: {beside['over_limit']} beside "
                f"{beside['batches']} batches, {alone['over_limit']} alone (of "
                f"{beside['requests']:,} and {alone['requests']:,}); p99 {beside['p99_ms']} ms "
                f"against {alone['p99_ms']}; slowest {beside['max_ms']:.1f} ms",
                "met": beside["over_limit"] - alone["over_limit"] <= 1,
            }
        )
    on = next((r for r in rows if r["limit"] == "snapshot" and "every" in r["case"]), None)
    off = next((r for r in rows if r["limit"] == "snapshot" and r["case"].endswith("off")), None)
    if on and off:
        stall = on.get("fork_ms_max")
        # The fork is what holds the loop (the server times it). A single slowest
        # answer is the machine's as often as not (27.5 ms without snapshots in one
        # trial), so the answers over the limit are counted, with against without.
        extra = on["over_limit"] - off["over_limit"]
        out.append(
            {
                "figure": f"event-loop lag while {on['pairs']:,} pairs are snapshotted",
                "target": f"no stall over {LAG_LIMIT_MS:.0f} ms",
                "measured": f"fork at most {stall} ms over {on['snapshots']} snapshots; "
                f"answers over {LAG_LIMIT_MS:.0f} ms: {on['over_limit']} with, "
                f"{off['over_limit']} without (of {on['requests']:,} and {off['requests']:,}); "
                f"slowest {on['max_ms']:.1f} ms with, {off['max_ms']:.1f} ms without",
                "met": bool(on["snapshots"])
                and stall is not None
                and stall <= LAG_LIMIT_MS
                and extra <= 1,
            }
        )
    return out
