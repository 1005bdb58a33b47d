"""Instructions per request of the app in process, counted by callgrind: one version of
tophosts against another.

    python -m bench.app_instructions [--src SRC ...] [--requests 1000,3000]

Wall-clock rates on this shared machine move by 20% from round to round; instruction
counts move by about 1%. This runs the ASGI app of each ``--src`` folder (the ``src/``
of a checkout, e.g. from ``git archive``; default: this one) in a process of its own
under ``valgrind --tool=callgrind``, on a fixed clock, and drives it directly with the
same requests, with no server and no sockets:

* ``single``: ``POST /counter``, one event of 5 hosts (of 1,000), always the same;
* ``bulk``: ``POST /counters``, 1,000 such events over the past minute.

Each is run twice, with two numbers of requests; the difference of the two totals
over the difference of the requests is the cost of one request, start-up and
warm-up cancelled out. A real server adds uvicorn's protocol and the kernel's
socket work to each request, the same for every version (~110k instructions for a
single event), so the relative difference of whole requests is smaller than here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A round minute and 30 s: the bulk events (the 60 s before the past 30) all lie in
# the past minute, whatever the day the bench runs.
T = 1796133330

DRIVER = r"""
import asyncio, json, random, sys
import uvloop
from tophosts.app import create_app
from tophosts.config import Settings

KIND, N, T = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])

def body():
    rng = random.Random(1)
    events = []
    for i in range(1 if KIND == "single" else 1000):
        event = {"timestamp": int(T) - 90 + i % 60}
        for h in rng.sample(range(1000), 5):
            event[f"host{h}.example"] = 1 + i % 3
        events.append(event)
    return json.dumps(events[0] if KIND == "single" else events).encode()

async def main():
    app = create_app(Settings(log_level="warning"), clock=lambda: T)
    lifespan = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    started = asyncio.Event()
    async def lifespan_send(message):
        if message["type"] == "lifespan.startup.complete":
            started.set()
    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(lifespan_scope, lifespan.get, lifespan_send))
    await started.wait()
    data = body()
    path = "/counter" if KIND == "single" else "/counters"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080),
        "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())],
        "state": {},
    }
    statuses = set()
    async def receive():
        return {"type": "http.request", "body": data, "more_body": False}
    async def send(message):
        if message["type"] == "http.response.start":
            statuses.add(message["status"])
    for _ in range(N + 20):
        await app(dict(scope), receive, send)
    assert statuses == {200}, statuses
    await lifespan.put({"type": "lifespan.shutdown"})
    await task

uvloop.run(main())
"""


def instructions(src: Path, kind: str, requests: int) -> int:
    """Instructions of one process answering ``requests`` (+ 20 warm-up) requests."""
    with tempfile.TemporaryDirectory() as folder:
        driver = Path(folder) / "driver.py"
        driver.write_text(DRIVER)
        out = Path(folder) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
        # Compiled beforehand, so that neither run writes the bytecode caches.
        subprocess.run(
            [sys.executable, "-c", "import tophosts.app"], env=env, check=True, cwd=folder
        )
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(driver),
                kind,
                str(requests),
                str(T),
            ],
            env=env,
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--src", action="append", type=Path, help="a tophosts src/ folder (repeatable)"
    )
    parser.add_argument("--requests", default="1000,3000", help="two numbers of requests")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    sources = args.src or [ROOT / "src"]
    low, high = (int(n) for n in args.requests.split(","))
    rows = []
    for kind, scale in (("single", 1), ("bulk", 50)):
        # A bulk request costs ~400 single ones: fewer of them, for the same run time.
        lo, hi = max(1, low // scale), max(2, high // scale)
        for src in sources:
            per = (instructions(src, kind, hi) - instructions(src, kind, lo)) / (hi - lo)
            rows.append({"kind": kind, "src": str(src), "instructions": round(per)})
            print(f"{kind:6} {per:>14,.0f} instructions/request  {src}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
