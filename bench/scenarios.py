"""The scenarios: five run against tophosts, the ceiling and the naive baseline;
``metrics`` against tophosts with and without its request-path metrics; ``redis``
against tophosts on the memory store and on Redis, with one and two workers."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec

from bench.data import PER_EVENT, Events, distinct_batches
from bench.limits import Limits
from bench.loadgen import (
    AsyncioLoad,
    Conn,
    Generator,
    Load,
    LoadResult,
    request_bytes,
    time_queries,
)
from bench.loadgen import percentile as pct
from bench.servers import (
    LOAD_CPU,
    SERVER_CPU,
    TARGETS,
    RedisServer,
    Server,
    Target,
    affinity,
    all_cpus,
    can_pin,
    cpus_of,
    machine_cpu_seconds,
    own_cpu_seconds,
    process_cpu_seconds,
    set_affinity,
)
from tophosts.config import Settings
from tophosts.logs import FLUSH_SECONDS
from tophosts.windows import HOUR, MINUTE, Window, past

SCENARIOS = (
    "single",
    "bulk",
    "query",
    "mixed",
    "cardinality",
    "metrics",
    "redis",
    "instructions",
    "accesslog",
    "limits",
)
# Result lists besides one per scenario: the redis scenario's query timings.
EXTRA_RESULTS = ("redis_query",)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long and how big: ``FULL`` for ``make bench``, ``QUICK`` for the test suite."""

    seconds: int  # per timed load run
    warmup: int  # untimed load before each timed run
    rounds: int  # ingest runs per target, interleaved across targets; the median is kept
    quiet_wait: float  # most seconds to wait for other processes to calm down before a run
    quiet_budget: float  # most seconds of such waiting in the whole run
    single_connections: tuple[int, ...]
    bulk_connections: int
    bulk_events: int  # events per POST /counters
    sizes: tuple[int, ...]  # stored events per window, scenario 3
    query_samples: int  # most timed queries per (size, window)
    query_budget: float  # seconds of timed queries per (size, window)
    hosts_stored: int  # host pool of the stored data
    cardinality: int  # distinct hosts, scenario 5
    metrics_rounds: int  # rounds of the metrics scenario, which looks for a few percent
    metrics_connections: int  # its single-event load
    # Single-event loads of the redis scenario, every setup alike: the suite's
    # usual 16, and enough concurrency for the group commit to batch.
    redis_connections: tuple[int, ...]
    redis_threads: int  # wrk threads of that load
    redis_stored: int  # events per window stored before the Redis /stats timings
    instr_requests: int  # POST /counter requests counted under callgrind, per server
    instr_bulk: int  # POST /counters requests counted, of INSTR_BULK_EVENTS events each
    instr_rounds: int  # callgrind sessions per server (the fewest instructions are kept)
    # Seconds of each timed run of the accesslog and limits scenarios when under a
    # second (asyncio generator, for the quick plan); 0: ``seconds`` with the chosen one.
    short_runs: float
    accesslog_rounds: int  # rounds of the accesslog scenario, alternating the servers
    limit_caps: tuple[int, ...]  # --max-tracked-hosts of the limits scenario
    limit_levels: tuple[int, ...]  # fill levels of an hour, in percent of the cap
    limit_max_body: int  # --max-body of the limits scenario
    limit_body_samples: int  # timed bodies at the limit
    lag_pairs: int  # (host, window) pairs held while the loop lag is measured
    lag_seconds: float  # of each POST /counter loop round
    lag_rounds: int  # rounds per server, alternating
    lag_interval: float  # --snapshot-interval of the server that snapshots


FULL = Plan(
    seconds=5,
    warmup=1,
    rounds=3,
    quiet_wait=10.0,
    quiet_budget=45.0,
    single_connections=(16, 64),
    bulk_connections=4,
    bulk_events=1000,
    sizes=(1_000, 10_000, 100_000, 1_000_000),
    query_samples=2000,
    query_budget=2.0,
    hosts_stored=10_000,
    cardinality=1_000_000,
    metrics_rounds=5,
    metrics_connections=16,
    redis_connections=(16, 256),
    redis_threads=1,
    redis_stored=100_000,
    instr_requests=3000,
    instr_bulk=300,
    instr_rounds=2,
    short_runs=0.0,
    accesslog_rounds=6,
    limit_caps=(1_000_000, 100_000),
    limit_levels=(0, 50, 99, 100),
    limit_max_body=Settings().max_body,
    limit_body_samples=5,
    lag_pairs=1_000_000,
    lag_seconds=5.0,
    lag_rounds=2,
    lag_interval=1.0,
)
QUICK = Plan(
    seconds=1,
    warmup=0,
    rounds=1,
    quiet_wait=0.0,
    quiet_budget=0.0,
    single_connections=(16,),
    bulk_connections=4,
    bulk_events=1000,
    sizes=(1_000, 10_000),
    query_samples=200,
    query_budget=0.2,
    hosts_stored=10_000,
    cardinality=20_000,
    metrics_rounds=1,
    metrics_connections=16,
    redis_connections=(64,),
    redis_threads=1,
    redis_stored=1_000,
    instr_requests=100,
    instr_bulk=10,
    instr_rounds=1,
    short_runs=0.3,
    accesslog_rounds=1,
    limit_caps=(20_000,),
    limit_levels=(0, 100),
    limit_max_body=1 << 20,
    limit_body_samples=2,
    lag_pairs=50_000,
    lag_seconds=0.5,
    lag_rounds=1,
    lag_interval=0.1,
)

INGEST_HOSTS = 1000  # host pool of scenarios 1, 2 and 4
INSTR_BULK_EVENTS = 100  # events per POST /counters under callgrind
INSTR_TARGETS: tuple[Target, ...] = (
    "tophosts",
    "tophosts-nometrics",
    "ceiling",
    "tophosts-accesslog",
    "tophosts-accesslog-all",
    "tophosts-stdlog",
)
METRICS_TARGETS: tuple[Target, ...] = ("tophosts", "tophosts-nometrics", "tophosts-again")
# The default --log-level info (--access-log refused) against no access log, --access-log
# all, and a second server without: the noise floor of the run.
ACCESSLOG_TARGETS: tuple[Target, ...] = (
    "tophosts-accesslog",
    "tophosts",
    "tophosts-accesslog-all",
    "tophosts-again",
)
MIXED_CONNECTIONS = 16

Row = dict[str, Any]
Step = Callable[[str], None]


def now() -> float:
    return time.time()


def ingest_span() -> tuple[int, int]:
    """The past 60 seconds: where the ingest scenarios stamp their events."""
    t = int(now())
    return t - 60, t


def hour_span() -> tuple[int, int]:
    """The past round hour, less the past minute where that falls inside it."""
    start, end = past(now(), Window.HOUR)
    return start, min(end, past(now(), Window.MINUTE).start)


def minute_span() -> tuple[int, int]:
    return tuple(past(now(), Window.MINUTE))  # type: ignore[return-value]


def background_cores(interval: float = 0.5) -> float:
    """CPU cores kept busy over ``interval`` s by whatever runs (0 where there is no /proc)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(interval)
        total1, idle1 = snapshot()
    except OSError:
        return 0.0
    if total1 == total0:
        return 0.0
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait until other processes use under ``threshold`` cores, at most ``max_wait`` s.

    Called while our own servers and load are idle, so what it sees is the
    neighbours'. Returns the last reading, which the results keep.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy = background_cores()
        if busy < threshold or time.monotonic() > deadline:
            return busy


def post_all(port: int, bodies: Iterable[bytes], connections: int = 2) -> int:
    """POST every body to ``/counters`` over ``connections`` keep-alive connections.

    Bodies are built on this thread while the connections wait for answers, so
    the server is never idle for the client. Returns the events accepted.
    """
    local = threading.local()
    conns: list[Conn] = []
    lock = threading.Lock()
    accepted = 0

    def post(body: bytes) -> int:
        conn: Conn | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = Conn(port)
            with lock:
                conns.append(conn)
        status, answer = conn.request(request_bytes("POST", "/counters", body))
        if status != 200:
            raise RuntimeError(f"POST /counters answered {status}: {answer[:300]!r}")
        return int(msgspec.json.decode(answer).get("accepted", 0))

    pending: collections.deque[Future[int]] = collections.deque()
    try:
        with ThreadPoolExecutor(connections) as pool:
            for body in bodies:
                pending.append(pool.submit(post, body))
                while len(pending) > 2 * connections:
                    accepted += pending.popleft().result()
            while pending:
                accepted += pending.popleft().result()
    finally:
        for conn in conns:
            conn.close()
    return accepted


class Loaded:
    """What one server holds of the past minute and hour, refilled when a window turns."""

    def __init__(self, server: Server, events: Events) -> None:
        self.server = server
        self.events = events
        self.held: dict[Window, tuple[int, int]] = {}  # window -> (start, events)

    def fill(self, size: int, windows: Iterable[Window]) -> None:
        for window in windows:
            span = hour_span() if window is Window.HOUR else minute_span()
            start, held = self.held.get(window, (-1, 0))
            if start != span[0]:
                held = 0  # the window turned: what we sent no longer counts there
            if size > held:
                post_all(self.server.port, self.events.batches(size - held, *span))
            self.held[window] = (span[0], max(size, held))

    def current(self, window: Window) -> bool:
        span = hour_span() if window is Window.HOUR else minute_span()
        return self.held.get(window, (-1, 0))[0] == span[0]


def singles(seed: int) -> Callable[[], list[bytes]]:
    """Single-event bodies (``Load.bodies``), stamped anew for each run."""
    events = Events(INGEST_HOSTS, seed=seed)
    return lambda: events.bodies(2000, *ingest_span())


def batches(per: int, seed: int) -> Callable[[], list[bytes]]:
    """Sixteen ``POST /counters`` bodies of ``per`` events, stamped anew for each run."""
    events = Events(INGEST_HOSTS, seed=seed)
    return lambda: [events.batch(per, *ingest_span()) for _ in range(16)]


MEASURABLE_CPU_S = 0.1
"""The least server CPU time a short run must use for its CPU per request to count:
ten ticks of the kernel's usual 100 Hz clock, so the figure is within about 10%."""
LONGEST_SHORT_RUN_S = 5.0


def _longer(seconds: float, used: Iterable[float]) -> float:
    """The next length for a short run whose servers used ``used`` CPU seconds in
    ``seconds``, or 0 when each used enough to measure (or the run is long enough):
    on a starved machine a 0.3 s run may use no measurable CPU at all."""
    if not seconds or seconds >= LONGEST_SHORT_RUN_S:
        return 0.0
    if all(cpu >= MEASURABLE_CPU_S for cpu in used):
        return 0.0
    return min(seconds * 4, LONGEST_SHORT_RUN_S)


def load_row(result: LoadResult) -> Row:
    return {
        "requests": result.requests,
        "seconds": round(result.seconds, 3),
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "max_ms": round(result.max_ms, 3),
        "non2xx": result.non2xx,
        "errors": result.errors,
    }


class Bench:
    def __init__(
        self,
        plan: Plan,
        generator: Generator,
        step: Step,
        compared: Iterable[Target] = TARGETS,
    ) -> None:
        self.plan = plan
        # The servers scenarios 1-5 compare: tophosts, the ceiling and the naive
        # baseline; or tophosts and another version of it (--baseline).
        self.compared = tuple(compared)
        self.gen = generator
        self.step = step
        self.started_steps = 0
        self.quiet_left = plan.quiet_budget
        self.results: dict[str, list[Row]] = {name: [] for name in SCENARIOS + EXTRA_RESULTS}

    def steps(self, scenarios: Iterable[str]) -> int:
        rounds = self.plan.rounds
        per_target = {
            "single": len(self.plan.single_connections) * rounds,
            "bulk": rounds,
            "query": len(self.plan.sizes),
            "mixed": rounds,
            "cardinality": 1,
        }
        chosen = list(scenarios)
        count = len(self.compared) * sum(per_target.get(s, 0) for s in chosen)
        if "metrics" in chosen:
            count += len(METRICS_TARGETS) * 2 * self.plan.metrics_rounds  # two loads
        if "redis" in chosen:
            levels = len(self.plan.redis_connections)
            count += len(REDIS_SETUPS) * levels * rounds + 1  # + the query timings
        if "instructions" in chosen:
            count += len(INSTR_TARGETS) * self.plan.instr_rounds
        if "accesslog" in chosen:
            count += (len(ACCESSLOG_TARGETS) + 1) * self.plan.accesslog_rounds
        if "limits" in chosen:
            plan = self.plan
            per_cap = 2 * len(plan.limit_levels) + 1  # fills, timings, the 429s
            count += len(plan.limit_caps) * per_cap + 3 + 3 + 2 + 4 * plan.lag_rounds
        return count

    def run(self, scenarios: Iterable[str]) -> dict[str, list[Row]]:
        chosen = set(scenarios)
        # Ingest: all three servers up at once, runs interleaved round by round,
        # so that a noisy neighbour hits every target alike.
        ingest = [s for s in ("single", "bulk") if s in chosen]
        if ingest:
            with contextlib.ExitStack() as stack:
                running = [stack.enter_context(Server(t)) for t in self.compared]
                for name in ingest:
                    getattr(self, name)(running)
        if "metrics" in chosen:
            with contextlib.ExitStack() as stack:
                running = [stack.enter_context(Server(t)) for t in METRICS_TARGETS]
                self.metrics(running)
        # Stored data: one server at a time, each holding its own data set.
        groups: tuple[tuple[str, ...], ...] = (("query", "mixed"), ("cardinality",))
        for group in groups:
            todo = [s for s in group if s in chosen]
            for target in self.compared if todo else ():
                with Server(target) as server:
                    for scenario in todo:
                        getattr(self, scenario)(server)
        if "redis" in chosen:
            self.redis()
        if "instructions" in chosen:
            self.instructions()
        if "accesslog" in chosen:
            with contextlib.ExitStack() as stack:
                running = [stack.enter_context(Server(t)) for t in ACCESSLOG_TARGETS]
                self.accesslog(running)
        if "limits" in chosen:
            Limits(self).run()
        return self.results

    def _quiet(self) -> float | None:
        """Wait (bounded) until other processes leave the CPUs alone; their load in cores."""
        if not self.plan.quiet_wait:
            return None
        started = time.monotonic()
        busy = wait_quiet(max(0.0, min(self.plan.quiet_wait, self.quiet_left)))
        self.quiet_left -= time.monotonic() - started
        return round(busy, 2)

    def _timed(
        self,
        server: Server,
        loads: list[Load],
        others: Mapping[str, Callable[[], float]] | None = None,
        short: bool = False,
    ) -> tuple[list[LoadResult], Row]:
        """Wait for quiet, warm up, then one timed run; also where the CPU went meanwhile.

        ``short``: a run of ``plan.short_runs`` seconds, where the plan has them.

        ``server_cpu_util``: cores the server (all its processes) used; also the
        load generator's (``load_cpu_util``), each of ``others`` (``<name>_cpu_util``)
        and the whole machine's (``machine_cpu_util``, which also holds the
        kernel's network work and any neighbour).
        """
        background = self._quiet()
        if self.plan.warmup:
            self.gen.run(server.port, loads[:1], self.plan.warmup)
        meters = {
            "server": server.cpu_seconds,
            "load": own_cpu_seconds,
            **(others or {}),
            "machine": machine_cpu_seconds,
        }
        seconds_asked = self.plan.short_runs if short else 0.0
        while True:
            before = {name: meter() for name, meter in meters.items()}
            if seconds_asked:
                results = AsyncioLoad().run(server.port, loads, seconds_asked)
            else:
                results = self.gen.run(server.port, loads, self.plan.seconds)
            used = {name: meter() - before[name] for name, meter in meters.items()}
            seconds_asked = _longer(seconds_asked, [used["server"]])
            if not seconds_asked:
                break
        seconds = results[0].seconds
        row: Row = {
            "background_cores": background,
            # Where it ran, as read back from the kernel after the run: the CPUs
            # the server's processes and the load generator were allowed.
            "server_cpus": server.cpus_now(),
            "load_cpus": cpus_of(0),
            # Share of its core the server got, and what it did per CPU-second:
            # the second stays meaningful when neighbours take part of the core.
            "server_cpu_util": round(used["server"] / seconds, 2) if seconds else None,
            "rps_per_cpu_s": round(results[0].requests / used["server"])
            if used["server"] > 0
            else None,
        }
        for name in meters:
            if name != "server":
                row[f"{name}_cpu_util"] = round(used[name] / seconds, 2) if seconds else None
        return results, row

    def _rounds(
        self,
        servers: list[Server],
        load: Load,
        label: str,
        rounds: int | None = None,
        alternate: bool = False,
        short: bool = False,
    ) -> dict[Target, Row]:
        """``rounds`` timed runs per server, interleaved; each server's median run.

        ``alternate``: every other round runs the servers in reverse order, so
        that no server always runs right after another.
        """
        rounds = rounds or self.plan.rounds
        runs: dict[Target, list[Row]] = {server.target: [] for server in servers}
        for n in range(rounds):
            order = servers[::-1] if alternate and n % 2 else servers
            for server in order:
                self.step(f"{label}: {server.target}, round {n + 1}/{rounds}")
                [result], cpu = self._timed(server, [load], short=short)
                runs[server.target].append({**load_row(result), **cpu})
        return {target: median_run(rows) for target, rows in runs.items()}

    # -- 1. single-event ingest ---------------------------------------------------

    def single(self, servers: list[Server]) -> None:
        bodies = singles(seed=11)
        for conns in self.plan.single_connections:
            load = Load("POST", "/counter", conns, bodies)
            for target, row in self._rounds(servers, load, f"single, {conns} conns").items():
                self.results["single"].append({"target": target, "connections": conns, **row})

    # -- 2. bulk ingest ---------------------------------------------------------

    def bulk(self, servers: list[Server]) -> None:
        per = self.plan.bulk_events
        load = Load("POST", "/counters", self.plan.bulk_connections, batches(per, seed=12))
        for target, row in self._rounds(servers, load, f"bulk, {per} events per POST").items():
            row["events_per_s"] = round(row["rps"] * per)
            row["host_counts_per_s"] = row["events_per_s"] * PER_EVENT
            row["events_per_s_rounds"] = [round(r * per) for r in row.pop("rps_rounds")]
            self.results["bulk"].append(
                {"target": target, "connections": self.plan.bulk_connections, **row}
            )

    # -- 3. query against stored data ------------------------------------------

    def query(self, server: Server) -> None:
        loaded = Loaded(server, Events(self.plan.hosts_stored, seed=13))
        self._loaded = loaded
        for size in self.plan.sizes:
            self.step(f"query with {size:,} events stored per window")
            rows = []
            for _attempt in range(3):
                loaded.fill(size, (Window.HOUR, Window.MINUTE))
                self._quiet()
                rows = [self._time_window(server, window, size) for window in Window]
                if all(loaded.current(w) for w in Window):
                    break  # else a window turned while timing: fill it again, retime
            rss = server.rss_mb()
            for row in rows:
                row["rss_mb"] = round(rss, 1) if rss is not None else None
            self.results["query"].extend(rows)

    def _time_window(self, server: Server, window: Window, size: int) -> Row:
        path = f"/stats?stats_type={window.label}"
        ms = time_queries(server.port, path, self.plan.query_samples, self.plan.query_budget)
        first, ranked = ms[0], sorted(ms)
        return {
            "target": server.target,
            "window": window.label,
            "stored_events": size,
            "samples": len(ms),
            "first_ms": round(first, 3),
            "p50_ms": round(pct(ranked, 50), 3),
            "p99_ms": round(pct(ranked, 99), 3),
            "max_ms": round(ranked[-1], 3),
        }

    # -- 4. mixed ----------------------------------------------------------------

    def mixed(self, server: Server) -> None:
        size = max(self.plan.sizes)
        loaded = getattr(self, "_loaded", None) or Loaded(server, Events(self.plan.hosts_stored))
        ingest = Load("POST", "/counter", MIXED_CONNECTIONS, singles(seed=14))
        queries = Load("GET", "/stats?stats_type=hour", 1)
        alone: list[LoadResult] = []
        mixed: list[tuple[LoadResult, LoadResult]] = []
        for n in range(self.plan.rounds):
            self.step(f"mixed, {size:,} stored: {server.target}, round {n + 1}/{self.plan.rounds}")
            loaded.fill(size, (Window.HOUR,))
            [result], _ = self._timed(server, [ingest])
            alone.append(result)
            self._quiet()
            with_queries = self.gen.run(server.port, [ingest, queries], self.plan.seconds)
            mixed.append((with_queries[0], with_queries[1]))
        rps_alone = sorted(r.rps for r in alone)[len(alone) // 2]
        ingest_mixed, query = sorted(mixed, key=lambda pair: pair[0].rps)[len(mixed) // 2]
        drop = 1 - ingest_mixed.rps / rps_alone if rps_alone else 0.0
        self.results["mixed"].append(
            {
                "target": server.target,
                "stored_events": size,
                "ingest_rps_alone": round(rps_alone, 1),
                "ingest_rps_mixed": round(ingest_mixed.rps, 1),
                "ingest_drop_pct": round(100 * drop, 1),
                "ingest_p99_ms_mixed": round(ingest_mixed.p99_ms, 3),
                "queries": query.requests,
                "query_p50_ms": round(query.p50_ms, 3),
                "query_p99_ms": round(query.p99_ms, 3),
                "rounds_alone": [round(r.rps, 1) for r in alone],
                "rounds_mixed": [round(pair[0].rps, 1) for pair in mixed],
                "non2xx": sum(r.non2xx for r in alone) + sum(a.non2xx + b.non2xx for a, b in mixed),
            }
        )

    # -- 5. cardinality -----------------------------------------------------------

    def cardinality(self, server: Server) -> None:
        hosts = self.plan.cardinality
        self.step(f"cardinality: {hosts:,} distinct hosts in the past hour")
        for _attempt in range(2):
            span = hour_span()
            post_all(server.port, distinct_batches(hosts, *span))
            self._quiet()
            path = "/stats?stats_type=hour"
            ms = time_queries(server.port, path, self.plan.query_samples, self.plan.query_budget)
            if hour_span() == span:
                break
        cold, cached = ms[0], sorted(ms[1:]) or [ms[0]]
        rss = server.rss_mb()
        self.results["cardinality"].append(
            {
                "target": server.target,
                "hosts": hosts,
                "events": -(-hosts // PER_EVENT),
                "cold_ms": round(cold, 3),
                "cached_samples": len(ms) - 1,
                "cached_p50_ms": round(pct(cached, 50), 3),
                "cached_p99_ms": round(pct(cached, 99), 3),
                "rss_mb": round(rss, 1) if rss is not None else None,
            }
        )

    # -- 6. metrics: their cost on the ingest hot path ----------------------------

    def metrics(self, servers: list[Server]) -> None:
        """tophosts against itself without request-path metrics (a NullMetrics handed to
        the app), and against a second tophosts process: the control.

        All serve from ``SERVER_CPU``, driven from ``LOAD_CPU``, in rounds whose
        order reverses every other round. The cost is 1 - with / without, three
        ways: of the median throughputs, the median of each round's pair (the
        runs of a round are back to back, so a drift in the machine hits both)
        and of the work done per server CPU-second. The control's difference
        from tophosts, measured the same way, is what the same code scores apart
        on this machine: a cost smaller than that is not resolved.
        """
        per = self.plan.bulk_events
        loads = {
            "single": Load("POST", "/counter", self.plan.metrics_connections, singles(seed=15)),
            "bulk": Load("POST", "/counters", self.plan.bulk_connections, batches(per, seed=16)),
        }
        rounds = self.plan.metrics_rounds
        for kind, load in loads.items():
            label = f"metrics, {kind}"
            rows = self._rounds(servers, load, label, rounds=rounds, alternate=True)
            mine, bare = rows["tophosts"], rows["tophosts-nometrics"]
            mine["cost_pct"] = _cost(mine["rps"], bare["rps"])
            mine["cost_pct_paired"] = _paired_cost(mine["rps_rounds"], bare["rps_rounds"])
            mine["cost_pct_cpu"] = _cost(mine["rps_per_cpu_s"], bare["rps_per_cpu_s"])
            control = rows.get("tophosts-again")
            if control is not None:
                # tophosts "costs" this against itself: the noise floor of this run.
                mine["control_pct_paired"] = _paired_cost(mine["rps_rounds"], control["rps_rounds"])
            if kind == "single":
                # What the variant still does for metrics, timed here, against
                # the server CPU time of one request without metrics.
                per_ns = _residual_ns()
                mine["residual_ns"] = round(per_ns)
                if bare["rps_per_cpu_s"]:
                    mine["residual_pct"] = round(100 * per_ns * bare["rps_per_cpu_s"] / 1e9, 2)
            for target, row in rows.items():
                if kind == "bulk":
                    row["events_per_s"] = round(row["rps"] * per)
                self.results["metrics"].append(
                    {"target": target, "load": kind, "connections": load.connections, **row}
                )

    # -- 9. accesslog: the default access log's cost -------------------------------

    def accesslog(self, servers: list[Server]) -> None:
        """Single-event ingest at the default ``--log-level info`` and ``--access-log
        refused`` (a summary line every 10 s, as every request is answered 200) against
        ``--log-level warning`` (no access log), alternating rounds; also ``--access-log
        all`` (a queued line per request), and a second ``warning`` server, whose share
        of the first is the noise floor of the run."""
        load = Load("POST", "/counter", self.plan.metrics_connections, singles(seed=18))
        rounds = self.plan.accesslog_rounds
        rows = self._rounds(servers, load, "accesslog", rounds, alternate=True, short=True)
        together = self._together(servers, load, rounds)
        quiet = rows["tophosts"]
        time.sleep(3 * FLUSH_SECONDS)  # the last run's lines reach the log
        for target, row in rows.items():
            server = next(s for s in servers if s.target == target)
            log = server.log_text()
            row["access_lines"] = log.count(" INFO tophosts.access: POST /counter ")
            row["summary_lines"] = log.count(" requests answered in ")
            row["together_rps_per_cpu_s_rounds"] = together[target]
            if target != "tophosts":
                row["share"] = _share(row["rps"], quiet["rps"])
                row["share_paired"] = _paired_share(row["rps_rounds"], quiet["rps_rounds"])
                row["share_cpu"] = _share(row["rps_per_cpu_s"], quiet["rps_per_cpu_s"])
                row["share_together"] = _paired_share(together[target], together["tophosts"])
            level = "info" if target.startswith("tophosts-accesslog") else "warning"
            self.results["accesslog"].append(
                {"target": target, "log_level": level, "connections": load.connections, **row}
            )

    def _together(
        self, servers: list[Server], load: Load, rounds: int
    ) -> dict[Target, list[float]]:
        """Requests per CPU-second of each server in ``rounds`` runs where all of them
        are loaded at once, each by its own load generator, sharing the one server
        CPU: a neighbour, or the machine slowing down, then hits them all alike.

        Run one after another, rounds of the same server differ by ±20% on this
        machine; side by side in one run, they agree within a few percent.
        """
        out: dict[Target, list[float]] = {server.target: [] for server in servers}
        for n in range(rounds):
            self.step(f"accesslog: all {len(servers)} at once, round {n + 1}/{rounds}")
            runs = self.at_once([(server, load) for server in servers])
            for server, (result, used) in zip(servers, runs, strict=True):
                out[server.target].append(round(result.requests / used) if used > 0 else 0.0)
        return out

    def at_once(self, runs: list[tuple[Server, Load]]) -> list[tuple[LoadResult, float]]:
        """Each server under its own load, all at the same time, after a warm-up the same
        way: each one's result and server CPU seconds. They share the server CPU, so
        whatever slows the machine slows them alike: their CPU per request compares.
        """
        seconds = self.plan.short_runs or self.plan.seconds
        self._quiet()

        def run(pairs: list[tuple[Server, Load]], seconds: float) -> list[LoadResult]:
            with ThreadPoolExecutor(len(pairs)) as pool:
                return list(
                    pool.map(lambda pair: self._load(pair[0].port, pair[1], seconds), pairs)
                )

        if self.plan.warmup and not self.plan.short_runs:
            run(runs, self.plan.warmup)
        while True:
            before = [server.cpu_seconds() for server, _ in runs]
            results = run(runs, seconds)
            used = [
                server.cpu_seconds() - cpu for (server, _), cpu in zip(runs, before, strict=True)
            ]
            if not self.plan.short_runs or not (seconds := _longer(seconds, used)):
                return list(zip(results, used, strict=True))

    def _load(self, port: int, load: Load, seconds: float) -> LoadResult:
        if self.plan.short_runs:
            return AsyncioLoad().run(port, [load], seconds)[0]
        return self.gen.run(port, [load], int(seconds))[0]

    # -- 7. redis: the shared store, one and two workers -----------------------------

    def redis(self) -> None:
        """Single-event ingest on the memory store and on Redis (1 and 2 workers),
        interleaved round by round against one throwaway ``redis-server``; then
        ``GET /stats`` timings with ``plan.redis_stored`` events per window stored.

        Pinning (2 CPUs): the one-worker setups run as the rest of the suite does,
        the server alone on ``SERVER_CPU``, the load (and Redis) on ``LOAD_CPU``. Two
        workers, Redis and wrk cannot each have a CPU, so with two workers nothing
        is pinned and the kernel places them all; a one-worker Redis setup without
        pinning runs too, so the ratio can be read against either.
        """
        plan = self.plan
        with contextlib.ExitStack() as stack:
            redis = stack.enter_context(RedisServer())
            tag = f"bench{os.getpid()}"
            running: list[tuple[RedisSetup, Server]] = []
            for setup in REDIS_SETUPS:
                args: list[str] = []
                if setup.store == "redis":
                    args = ["--store", redis.url, "--redis-prefix", f"{tag}-{setup.key}"]
                    args += ["--workers", str(setup.workers)]
                cpus = {SERVER_CPU} if setup.pinned else all_cpus()
                running.append((setup, stack.enter_context(Server("tophosts", args, cpus))))
            bodies = singles(seed=17)
            loads = [
                Load("POST", "/counter", conns, bodies, plan.redis_threads)
                for conns in plan.redis_connections
            ]
            runs: dict[tuple[int, str], list[Row]] = collections.defaultdict(list)
            for n in range(plan.rounds):
                for load in loads:
                    for setup, server in running:
                        self.step(
                            f"redis, {load.connections} conns: {setup.label}, "
                            f"round {n + 1}/{plan.rounds}"
                        )
                        cpus = {LOAD_CPU} if setup.pinned else all_cpus()
                        set_affinity(redis.pid, cpus)
                        meters = {"redis": functools.partial(process_cpu_seconds, redis.pid)}
                        for i, pid in enumerate(server.worker_pids(), 1):
                            meters[f"worker{i}"] = functools.partial(process_cpu_seconds, pid)
                        with affinity(cpus):
                            [result], cpu = self._timed(server, [load], meters)
                        cpu["redis_cpus"] = cpus_of(redis.pid)
                        # Each worker's share: with two, whether the kernel spread the load.
                        cpu["worker_cpu_util"] = [
                            cpu.pop(f"worker{i}_cpu_util") for i in range(1, len(meters))
                        ]
                        runs[(load.connections, setup.key)].append({**load_row(result), **cpu})
            keys = _count_keys(redis.url, [f"{tag}-{setup.key}" for setup in REDIS_SETUPS])
            for load in loads:
                for setup in REDIS_SETUPS:
                    row = median_run(runs[(load.connections, setup.key)])
                    ours = sum(row[f"{k}_cpu_util"] or 0 for k in ("server", "load", "redis"))
                    self.results["redis"].append(
                        {
                            "target": "tophosts",
                            "setup": setup.key,
                            "label": setup.label,
                            "store": setup.store,
                            "workers": setup.workers,
                            "connections": load.connections,
                            "wrk_threads": load.threads,
                            "pinning": setup.pinning if can_pin() else "none: cannot pin here",
                            # The windows it wrote to Redis (None: memory store).
                            "redis_keys": keys[f"{tag}-{setup.key}"]
                            if setup.store == "redis"
                            else None,
                            **row,
                            # Machine CPU that no process of ours was charged for:
                            # the kernel's loopback work (softirq) and any neighbour.
                            "other_cpu_util": round(max(0.0, row["machine_cpu_util"] - ours), 2)
                            if row["machine_cpu_util"] is not None
                            else None,
                        }
                    )
            # GET /stats on Redis with data stored, and on memory for reference:
            # the one-worker servers, pinned as above.
            self.step(f"redis: GET /stats with {plan.redis_stored:,} events stored per window")
            set_affinity(redis.pid, {LOAD_CPU})
            for setup, server in running:
                if setup.workers != 1 or not setup.pinned:
                    continue
                loaded = Loaded(server, Events(plan.hosts_stored, seed=13))
                rows: list[Row] = []
                for _attempt in range(3):
                    loaded.fill(plan.redis_stored, (Window.HOUR, Window.MINUTE))
                    self._quiet()
                    rows = [self._time_window(server, w, plan.redis_stored) for w in Window]
                    if all(loaded.current(w) for w in Window):
                        break
                for row in rows:
                    row |= {"setup": setup.key, "label": setup.label, "store": setup.store}
                    row["hosts"] = plan.hosts_stored
                    row["pinning"] = setup.pinning if can_pin() else "none: cannot pin here"
                self.results["redis_query"].extend(rows)

    # -- 8. instructions per request (callgrind) ----------------------------------

    def instructions(self) -> None:
        """User-space instructions per request, which neighbours cannot move.

        Each server runs under ``valgrind --tool=callgrind`` with instrumentation
        off; after 200 untimed requests, it is switched on and counting starts
        from zero for ``plan.instr_requests`` single events (then
        ``plan.instr_bulk`` bulk posts), sent one at a time over one keep-alive
        connection, and the count is dumped. The kernel's work (the same for
        every server) is not in it. The fewest instructions of the rounds are
        kept: what varies between runs only ever adds (timers, collections).
        """
        plan = self.plan
        single = Events(INGEST_HOSTS, seed=11).bodies(2000, *ingest_span())
        events = Events(INGEST_HOSTS, seed=12)
        bulk = [events.batch(INSTR_BULK_EVENTS, *ingest_span()) for _ in range(16)]
        loads = (
            ("single", "/counter", single, plan.instr_requests),
            ("bulk", "/counters", bulk, plan.instr_bulk),
        )
        counts: dict[tuple[Target, str], list[float]] = collections.defaultdict(list)
        for n in range(plan.instr_rounds):
            for target in INSTR_TARGETS:
                self.step(f"instructions: {target} under callgrind, round {n + 1}")
                for (kind, _, _, _), per in zip(loads, _callgrind(target, loads), strict=True):
                    counts[(target, kind)].append(per)
        for kind, path, _, requests in loads:
            rows: dict[Target, Row] = {}
            for target in INSTR_TARGETS:
                runs = counts[(target, kind)]
                rows[target] = {
                    "target": target,
                    "load": kind,
                    "path": path,
                    "events_per_request": 1 if kind == "single" else INSTR_BULK_EVENTS,
                    "requests": requests,
                    "instructions": round(min(runs)),
                    "instructions_rounds": [round(r) for r in runs],
                }
            mine, bare = rows["tophosts"], rows["tophosts-nometrics"]
            # As a share of tophosts' own instructions: 1 - without / with, the
            # throughput it would cost if time followed instructions.
            mine["metrics_cost_pct"] = round(
                100 * (1 - bare["instructions"] / mine["instructions"]), 1
            )
            mine["metrics_instructions"] = mine["instructions"] - bare["instructions"]
            # The access line at --log-level info, queued and as a logging record:
            # 1 - without / with, as above.
            for target in ("tophosts-accesslog", "tophosts-accesslog-all", "tophosts-stdlog"):
                info = rows[target]
                info["accesslog_cost_pct"] = round(
                    100 * (1 - mine["instructions"] / info["instructions"]), 1
                )
                info["accesslog_instructions"] = info["instructions"] - mine["instructions"]
            self.results["instructions"].extend(rows.values())


def _callgrind(target: Target, loads: Iterable[tuple[str, str, list[bytes], int]]) -> list[float]:
    """Instructions per request of ``target`` for each load, from one callgrind run."""
    with tempfile.TemporaryDirectory(prefix="tophosts-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        wrapper = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
        ]
        per: list[float] = []
        with Server(target, wrapper=wrapper) as server, _Client(server.port) as conn:

            def control(*args: str) -> None:
                subprocess.run(
                    ["callgrind_control", *args, str(server.proc.pid)],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )

            for number, (_kind, path, bodies, requests) in enumerate(loads, 1):
                raw = [request_bytes("POST", path, body) for body in bodies]
                for i in range(200):  # every code path taken and warm
                    _post(conn, raw[i % len(raw)])
                control("--instr=on")
                control("--zero")
                for i in range(requests):
                    _post(conn, raw[i % len(raw)])
                control("--dump")
                control("--instr=off")
                per.append(_totals(f"{out}.{number}") / requests)
        return per


class _Client:
    """One keep-alive connection, opened again if the server closed it: under callgrind
    on a busy machine, ``callgrind_control`` can take longer than the server keeps an
    idle connection (``--timeout-keep-alive``, 5 s). A new connection's few thousand
    instructions, once in a count, are noise."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = Conn(port)

    def request(self, raw: bytes) -> tuple[int, bytes]:
        try:
            return self.conn.request(raw)
        except ConnectionError:
            self.conn.close()
            self.conn = Conn(self.port)
            return self.conn.request(raw)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _post(conn: Conn | _Client, raw: bytes) -> None:
    status, body = conn.request(raw)
    if status != 200:
        raise RuntimeError(f"answered {status}: {body[:200]!r}")


def _totals(path: str) -> int:
    """The instruction count of one callgrind dump."""
    with open(path) as dump:
        for line in dump:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


@dataclasses.dataclass(frozen=True)
class RedisSetup:
    key: str
    store: str  # "memory" or "redis"
    workers: int
    pinned: bool  # server on SERVER_CPU, load and Redis on LOAD_CPU; else nothing pinned

    @property
    def label(self) -> str:
        workers = f"{self.workers} worker{'s' * (self.workers > 1)}"
        return f"{self.store}, {workers}" + ("" if self.pinned else ", unpinned")

    @property
    def pinning(self) -> str:
        if not self.pinned:
            return "none: server, Redis and load on any CPU"
        where = "load" if self.store == "memory" else "load and Redis"
        return f"server CPU {SERVER_CPU}; {where} CPU {LOAD_CPU}"


REDIS_SETUPS = (
    RedisSetup("memory", "memory", 1, pinned=True),
    RedisSetup("redis", "redis", 1, pinned=True),
    RedisSetup("redis-unpinned", "redis", 1, pinned=False),
    RedisSetup("redis-2w", "redis", 2, pinned=False),
)


def median_run(rows: list[Row]) -> Row:
    """The run of median throughput, with every run's rate and the totals of failures."""
    median = sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]
    return {
        **median,
        "rps_rounds": [r["rps"] for r in rows],
        "non2xx": sum(r["non2xx"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
    }


def _count_keys(url: str, prefixes: list[str]) -> dict[str, int]:
    """How many keys Redis at ``url`` holds under each ``--redis-prefix``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {p: sum(1 for _ in client.scan_iter(match=f"{p}:*")) for p in prefixes}
    finally:
        client.close()


def _paired_cost(with_: list[float], without: list[float]) -> float | None:
    """1 - the median of the rounds' with / without ratios, in percent."""
    ratios = [a / b for a, b in zip(with_, without, strict=True) if b]
    return round(100 * (1 - statistics.median(ratios)), 1) if ratios else None


def _share(with_: float | None, without: float | None) -> float | None:
    """with / without (None when either is missing)."""
    return round(with_ / without, 3) if with_ and without else None


def _paired_share(with_: list[float], without: list[float]) -> float | None:
    """The median of the rounds' with / without ratios."""
    ratios = [a / b for a, b in zip(with_, without, strict=True) if b]
    return round(statistics.median(ratios), 3) if ratios else None


def _cost(with_: float | None, without: float | None) -> float | None:
    """1 - with / without, in percent (None when either is missing)."""
    if not with_ or not without:
        return None
    return round(100 * (1 - with_ / without), 1)


def _residual_ns(repeat: int = 5, number: int = 500_000) -> float:
    """Nanoseconds per request that tophosts without metrics still spends only for
    metrics (and the access log, off here): two clock reads (best of ``repeat``)."""
    clock = {"perf_counter": time.perf_counter}
    both = "started = perf_counter(); perf_counter() - started"
    best = min(timeit.repeat(both, globals=clock, repeat=repeat, number=number))
    empty = min(timeit.repeat("pass", repeat=repeat, number=number))
    return max(0.0, best - empty) / number * 1e9


def rows_for(results: dict[str, list[Row]], scenario: str, target: Target) -> Iterator[Row]:
    return (row for row in results[scenario] if row["target"] == target)


__all__ = [
    "FULL",
    "HOUR",
    "INSTR_TARGETS",
    "METRICS_TARGETS",
    "MINUTE",
    "QUICK",
    "REDIS_SETUPS",
    "SCENARIOS",
    "Bench",
    "Plan",
]
