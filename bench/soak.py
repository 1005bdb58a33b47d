"""Soak and overload drill for tophosts (``make soak``, ``make soak-redis``).

It starts a real server pinned to CPU 0 and drives it from CPU 1, on 127.0.0.1
only, bounded in time:

1. capacity: single-event ingest at full speed for a few seconds (wrk when
   installed, else this script's own client);
2. soak: mixed ingest and ``GET /stats`` at 80% of that capacity for
   ``--duration`` seconds, with the server clock shifted so that the run crosses
   an hour boundary as well as every minute boundary. Events are a mix of
   on-time, late (into the past minute) and very late (into the past hour)
   ones. The client keeps its own recount of every event the server answered
   ``ok``; once a minute it pauses ingest, and both windows must equal that
   recount exactly;
3. overload: ``--overload`` seconds of wrk with many connections against
   ``--limit-concurrency``: the server must shed with 503, not crash or grow;
4. recovery: normal load again, timing how long until no request is shed.

With ``--store redis`` it also kills Redis (``kill -9``) a third of the way in
and restarts it 10 s later: every event answered 200 must be counted, and every
event answered 503 must not. An event answered 504 (Redis stopped answering
mid-write, so the server cannot know) may be counted or not, and the checks say
how many were. ``--starve N`` adds N busy-loop processes during the soak, for
replies that come back late because the machine is short of CPU. Redis runs
with ``appendfsync always`` so that a kill loses nothing it acknowledged.

Results are printed and written to ``bench/results/soak-<store>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import LOAD_CPU, SERVER_CPU, RedisServer, Server, rss_mb, set_affinity

HOSTS = [f"h{i:03}.soak" for i in range(300)]
PROBE_HOST = "probe.soak"  # capacity and overload traffic, checked separately
RESULTS = Path(__file__).parent / "results"


def pin(pid: int, cpu: int) -> None:
    set_affinity(pid, {cpu})


def rss_kib(pid: int) -> int:
    mb = rss_mb(pid)
    return int(mb * 1024) if mb is not None else 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- a lean keep-alive HTTP/1.1 client -------------------------------------------


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; (0, b"") when the connection failed."""
        for attempt in range(2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert self.reader is not None
                self.writer.write(raw)
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await self.reader.readexactly(length)
                if b"connection: close" in head.lower():
                    self.close()
                return status, body
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.close()
                if attempt:
                    return 0, b""
        return 0, b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()


# -- the drill -------------------------------------------------------------------


@dataclass
class Minute:
    sent: int = 0
    ok: int = 0
    expired: int = 0
    unavailable: int = 0
    uncertain: int = 0
    shed: int = 0
    errors: int = 0
    ingest_ms: list[float] = field(default_factory=list)
    query_ms: list[float] = field(default_factory=list)


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = 0
        self.offset = 0.0
        self.server: Server | None = None
        self.redis: RedisServer | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="tophosts-soak-"))
        # (window size, window start) -> host -> count, for events answered "ok"
        self.recount: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        # the same for events answered 504: Redis stopped answering mid-write,
        # so each may or may not be counted
        self.maybe: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self.checks: list[dict[str, Any]] = []
        self.rss: list[tuple[float, int]] = []
        self.paused = asyncio.Event()
        self.in_flight = 0
        self.results: dict[str, Any] = {"store": args.store}

    # -- processes

    def now(self) -> float:
        return time.time() + self.offset

    def start_redis(self) -> None:
        """A Redis with ``appendfsync always``, so that a kill loses nothing it acknowledged;
        the second start (after the outage) is on the same port and folder."""
        if self.redis is None:
            self.redis = RedisServer(appendonly=True)
        else:
            self.redis.start()

    def start_server(self) -> None:
        # Start half the soak before an hour boundary, so the run crosses it.
        now = time.time()
        boundary = now - now % 3600 + 3600
        self.offset = boundary - self.args.duration / 2 - now - 20
        args = ["--log-level", "warning", "--clock-offset", f"{self.offset:.3f}"]
        args += ["--limit-concurrency", str(self.args.limit_concurrency)]
        if self.args.store == "redis":
            assert self.redis is not None
            args += ["--store", self.redis.url]
        self.server = Server("tophosts", args, cpus={SERVER_CPU})
        self.port = self.server.port

    def stop(self) -> None:
        out = ""
        if self.server is not None:
            _, out = self.server.stop()
        if self.redis is not None:
            self.redis.stop()
        # What the server did with writes that got no reply from Redis.
        self.results["writes_without_reply"] = {
            "settled_applied": out.count("Redis says it was applied"),
            "settled_not_applied": out.count("Redis says it was not applied"),
            "unknown_504": out.count("its outcome is unknown"),
        }
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- load

    def wrk(self, seconds: float, connections: int, threads: int = 2) -> dict[str, int]:
        """Post probe events with wrk; returns its counts by status."""
        ts = int(self.now()) - 3600  # in the past hour for the whole run
        body = json.dumps({"timestamp": ts, PROBE_HOST: 1})
        script = self.tmp / "probe.lua"
        script.write_text(
            f"""
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
threads = {{}}
ok, shed, other = 0, 0, 0
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then shed = shed + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("ok"); b = b + t:get("shed"); c = c + t:get("other")
  end
  io.write(string.format("STATUS %d %d %d %d\\n", a, b, c, summary.requests))
end
"""
        )
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:.0f}s"]
        cmd += ["--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{self.port}/counter"]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            preexec_fn=lambda: pin(0, LOAD_CPU),
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("STATUS"))
        ok, shed, other, total = map(int, line.split()[1:])
        return {"ok": ok, "shed": shed, "other": other, "requests": total, "seconds": int(seconds)}

    def event(self, rng: random.Random) -> tuple[int, dict[str, int]]:
        roll = rng.random()
        if roll < 0.7:
            late = rng.uniform(0, 2)
        elif roll < 0.9:
            late = rng.uniform(2, 60)
        elif roll < 0.97:
            late = rng.uniform(60, 120)
        else:
            late = rng.uniform(1800, 3700)  # some of these are expired
        ts = int(self.now() - late)
        return ts, {host: rng.randint(1, 3) for host in rng.sample(HOSTS, 3)}

    async def ingest(self, rate: float, until: float, seed: int) -> None:
        rng = random.Random(seed)
        conn = Conn(self.port)
        interval = 1 / rate
        due = time.monotonic()
        while (now := time.monotonic()) < until:
            if not self.paused.is_set():
                await self.paused.wait()
                due = time.monotonic()
                continue
            if due > now:
                await asyncio.sleep(due - now)
            due += interval
            ts, counts = self.event(rng)
            raw = post("/counter", json.dumps({"timestamp": ts, **counts}).encode())
            minute = self.minutes[int(self.now() // 60)]
            minute.sent += 1
            self.in_flight += 1
            started = time.perf_counter()
            status, body = await conn.request(raw)
            minute.ingest_ms.append((time.perf_counter() - started) * 1000)
            self.in_flight -= 1
            if status == 200 and body == b'{"status":"ok"}':
                minute.ok += 1
                self.recount[(60, ts - ts % 60)].update(counts)
                self.recount[(3600, ts - ts % 3600)].update(counts)
            elif status == 200:
                minute.expired += 1
            elif status == 503 and b"store" in body:
                minute.unavailable += 1
            elif status == 504:
                minute.uncertain += 1
                self.maybe[(60, ts - ts % 60)].update(counts)
                self.maybe[(3600, ts - ts % 3600)].update(counts)
            elif status == 503:
                minute.shed += 1
            else:
                minute.errors += 1
        conn.close()

    async def query(self, until: float) -> None:
        conn = Conn(self.port)
        kinds = ("minute", "hour")
        i = 0
        while time.monotonic() < until:
            i += 1
            started = time.perf_counter()
            status, _ = await conn.request(get(f"/stats?stats_type={kinds[i % 2]}&limit=1000"))
            elapsed = (time.perf_counter() - started) * 1000
            minute = self.minutes[int(self.now() // 60)]
            if status == 200:
                minute.query_ms.append(elapsed)
            elif status != 503:
                minute.errors += 1
            await asyncio.sleep(0.02)
        conn.close()

    async def checkpoints(self, until: float) -> None:
        """Once a minute, with ingest paused, compare both windows with the recount."""
        conn = Conn(self.port)
        checked = int(self.now() // 60)
        while time.monotonic() < until:
            await asyncio.sleep(0.25)
            minute = int(self.now() // 60)
            if minute == checked or self.now() % 60 < 1.0:
                continue
            checked = minute
            self.paused.clear()
            while self.in_flight:
                await asyncio.sleep(0.001)
            now = self.now()
            check: dict[str, Any] = {"at": round(now, 1)}
            for size, kind in ((60, "minute"), (3600, "hour")):
                start = int(now // size) * size - size
                status, body = await conn.request(get(f"/stats?stats_type={kind}&limit=1000"))
                if status != 200:
                    check[kind] = f"unavailable ({status})"
                    continue
                got = json.loads(body)["top_hosts"]
                got.pop(PROBE_HOST, None)
                want = {h: n for h, n in self.recount[(size, start)].items() if n > 0}
                check[kind] = self.verdict(got, want, self.maybe[(size, start)])
                if got != want:
                    diff = {h: (got.get(h), want.get(h)) for h in set(got) | set(want)}
                    check[f"{kind}_diff"] = {h: v for h, v in diff.items() if v[0] != v[1]}
                check[f"{kind}_hosts"] = len(want)
                check[f"{kind}_total"] = sum(want.values())
            self.checks.append(check)
            self.paused.set()
        conn.close()

    @staticmethod
    def verdict(got: dict[str, int], want: dict[str, int], maybe: Counter[str]) -> str:
        """ "exact"; or, with events answered 504 in the window, whether each host's count
        lies between the events answered 200 and those plus the 504s; else MISMATCH."""
        if got == want:
            return "exact"
        hosts = set(got) | set(want)
        if maybe and all(
            want.get(h, 0) <= got.get(h, 0) <= want.get(h, 0) + maybe[h] for h in hosts
        ):
            counted = sum(got.values()) - sum(want.values())
            return f"exact, {counted} of {sum(maybe.values())} host-counts answered 504 counted"
        return "MISMATCH"

    async def sample_rss(self, until: float) -> None:
        assert self.server is not None
        started = time.monotonic()
        while time.monotonic() < until:
            self.rss.append((round(time.monotonic() - started, 1), rss_kib(self.server.proc.pid)))
            await asyncio.sleep(1)

    async def redis_outage(self, at: float, down: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        assert self.redis is not None
        self.redis.kill()
        killed = self.now()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.start_redis)
        self.results["redis_outage"] = {"killed_at": round(killed, 1), "down_s": down}

    async def soak(self, rate: float, seconds: float, connections: int = 16) -> None:
        until = time.monotonic() + seconds
        self.paused.set()
        tasks = [self.ingest(rate / connections, until, seed) for seed in range(connections)]
        tasks += [self.query(until), self.checkpoints(until), self.sample_rss(until)]
        if self.args.store == "redis":
            tasks.append(self.redis_outage(time.monotonic() + seconds / 3, 10))
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(self.args.starve)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()

    async def final_check(self) -> None:
        self.paused.clear()
        now = self.now()
        if now % 60 > 58:  # do not straddle a minute boundary
            await asyncio.sleep(61 - now % 60)
        await self.checkpoints_once()

    async def checkpoints_once(self) -> None:
        conn = Conn(self.port)
        now = self.now()
        check: dict[str, Any] = {"at": round(now, 1), "final": True}
        for size, kind in ((60, "minute"), (3600, "hour")):
            start = int(now // size) * size - size
            status, body = await conn.request(get(f"/stats?stats_type={kind}&limit=1000"))
            got = json.loads(body)["top_hosts"] if status == 200 else {}
            probe = got.pop(PROBE_HOST, 0)
            want = {h: n for h, n in self.recount[(size, start)].items() if n > 0}
            check[kind] = self.verdict(got, want, self.maybe[(size, start)])
            if kind == "hour":
                check["probe_in_hour"] = probe
        self.checks.append(check)
        conn.close()

    # -- the whole run

    def run(self) -> dict[str, Any]:
        pin(0, LOAD_CPU)
        if self.args.store == "redis":
            self.start_redis()
        self.start_server()
        assert self.server is not None
        try:
            have_wrk = shutil.which("wrk") is not None
            capacity = self.wrk(5, 16) if have_wrk else None
            if capacity is None:
                raise SystemExit("the soak drill needs wrk (apt-get install wrk)")
            cap_rate = capacity["ok"] / capacity["seconds"]
            rate = self.args.load * cap_rate
            self.results["capacity"] = {**capacity, "req_per_s": round(cap_rate)}
            self.results["soak"] = {"target_rate": round(rate), "seconds": self.args.duration}
            rss_start = rss_kib(self.server.proc.pid)
            asyncio.run(self.soak(rate, self.args.duration))
            asyncio.run(self.final_check())
            probe_ok = capacity["ok"]
            if self.args.overload:
                over = self.wrk(self.args.overload, self.args.overload_connections, threads=2)
                self.results["overload"] = over
                probe_ok += over["ok"]
                rss_after_overload = rss_kib(self.server.proc.pid)
                self.results["overload"]["rss_kib_after"] = rss_after_overload
                self.results["recovery"] = asyncio.run(self.recovery())
            self.results["probe_ok_answers"] = probe_ok
            asyncio.run(self.checkpoints_once())
            # wrk stops counting with requests still in flight, which the server may
            # have applied: the probe host's hour total lies in [answered ok, + conns].
            final = self.checks[-1]
            answered = self.results.get("overload", {}).get("ok", 0) + self.results.get(
                "_recovery_ok", 0
            )
            slack = self.args.overload_connections if self.args.overload else 0
            slack += self.results.get("overload", {}).get("other", 0)  # 504s: may be counted
            final["probe_expected"] = [answered, answered + slack]
            final["probe"] = (
                "within bounds"
                if answered <= final["probe_in_hour"] <= answered + slack
                else "MISMATCH"
            )
            self.results["server_alive"] = self.server.proc.poll() is None
            self.results["rss_kib"] = {
                "start": rss_start,
                "peak": max(r for _, r in self.rss),
                "end": rss_kib(self.server.proc.pid),
            }
        finally:
            self.stop()
        self.summarise()
        return self.results

    async def recovery(self) -> dict[str, Any]:
        """Normal load right after the overload: seconds until nothing is shed."""
        started = time.monotonic()
        conn = Conn(self.port)
        first_clean = None
        shed = 0
        while time.monotonic() - started < 15:
            ts = int(self.now()) - 3600
            status, _ = await conn.request(
                post("/counter", json.dumps({"timestamp": ts, PROBE_HOST: 1}).encode())
            )
            if status == 200:
                self.results.setdefault("_recovery_ok", 0)
                self.results["_recovery_ok"] += 1
                if first_clean is None:
                    first_clean = time.monotonic() - started
            else:
                shed += 1
                first_clean = None
            await asyncio.sleep(0.005)
        conn.close()
        return {"seconds_to_first_200": round(first_clean or -1, 3), "shed_after": shed}

    def summarise(self) -> None:
        per_minute = []
        for minute in sorted(self.minutes):
            m = self.minutes[minute]
            per_minute.append(
                {
                    "minute": time.strftime("%H:%M", time.gmtime(minute * 60)),
                    "sent": m.sent,
                    "ok": m.ok,
                    "expired": m.expired,
                    "shed_503": m.shed,
                    "store_503": m.unavailable,
                    "uncertain_504": m.uncertain,
                    "errors": m.errors,
                    "ingest_p99_ms": round(percentile(m.ingest_ms, 0.99), 2),
                    "query_p99_ms": round(percentile(m.query_ms, 0.99), 2),
                }
            )
        self.results["per_minute"] = per_minute
        self.results["checks"] = self.checks
        recovery_ok = self.results.pop("_recovery_ok", 0)
        self.results["probe_ok_answers"] = self.results.get("probe_ok_answers", 0) + recovery_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--duration", type=float, default=600, help="soak seconds")
    parser.add_argument("--load", type=float, default=0.8, help="share of measured capacity")
    parser.add_argument("--overload", type=float, default=60, help="overload seconds (0: none)")
    parser.add_argument("--overload-connections", type=int, default=512)
    parser.add_argument("--limit-concurrency", type=int, default=128)
    parser.add_argument("--results", help="file name under bench/results (default: by store)")
    parser.add_argument(
        "--starve",
        type=int,
        default=0,
        help="busy-loop processes competing for the CPUs during the soak (0: none)",
    )
    args = parser.parse_args()
    results = Drill(args).run()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.results or f"soak-{args.store}.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    checks = results["checks"]
    exact = sum(
        1 for c in checks if all(str(c.get(k)).startswith("exact") for k in ("minute", "hour"))
    )
    for name in ("store_503", "uncertain_504", "errors"):
        print(f"{name}: {sum(m[name] for m in results['per_minute'])}")
    print(
        json.dumps(
            {k: v for k, v in results.items() if k not in ("per_minute", "checks")}, indent=2
        )
    )
    print(f"checks: {exact}/{len(checks)} exact in both windows; written to {out}")
    bad = [c for c in checks if "MISMATCH" in (c.get("minute"), c.get("hour"), c.get("probe"))]
    errors = sum(m["errors"] for m in results["per_minute"])
    return 1 if bad or errors or not results["server_alive"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
