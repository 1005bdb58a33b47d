"""The longest step the decoder takes on a large body, in process: each body of
``--size`` bytes is read as ``POST /counters`` reads one (``Decoder.slices``, the
loop free between two slices, the garbage collector held off), timing the time
to each slice and to the refusal. Bodies: good batches (JSON and NDJSON, and one
of 32-byte events), the same refused at their last event, cut short, with a
syntax error or bytes that are not UTF-8 at the end, and one giant value (a
number of ``--size`` digits, alone, as a count, in an array; one event of as
many hosts as fit).

    python -m bench.steps --size 8388608 --repeat 3

No server, no network. Results go to stdout and ``steps.json`` in ``--out``
(``bench/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench.data import batch_of_size
from tophosts import gcpause
from tophosts.config import Settings
from tophosts.events import Decoder, EventError

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def bodies(size: int, now: int) -> dict[str, tuple[bytes, bool]]:
    """The bodies timed, by name: (body, NDJSON or not)."""
    array, _ = batch_of_size(size, now - 50, now - 5)
    head = array.rstrip()[:-1]  # without its closing bracket
    ndjson = head[1:].replace(b"},{", b"}\n{")
    digits = b"1" * (size - 40)
    from bench.body_lag import tiny_batch

    return {
        "array": (array, False),
        "array of one-host events, about 32 bytes each": (tiny_batch(size, now - 5), False),
        "array, last event refused": (head + b',{"timestamp":%d,"h":-1}]' % now, False),
        "array cut short": (head, False),
        "array, a syntax error at its end": (head + b",]", False),
        "array, not UTF-8 at its end": (head + b',{"timestamp":%d,"h\xff":1}]' % now, False),
        "NDJSON": (ndjson, True),
        "NDJSON, last line refused": (ndjson + b'\n{"timestamp":%d,"h":-1}' % now, True),
        "NDJSON cut short": (ndjson[:-3], True),
        "NDJSON, not UTF-8 on its last line": (
            ndjson + b'\n{"timestamp":%d,"h\xff":1}' % now,
            True,
        ),
        "one giant number": (digits, False),
        "one event, a giant count": (b'[{"timestamp":1,"a":' + digits + b"}]", False),
        "one NDJSON event, a giant count": (b'{"timestamp":1,"a":' + digits + b"}", True),
        "one event of as many hosts as fit": (b"[" + _wide(size - 2) + b"]", False),
    }


def _wide(size: int) -> bytes:
    """One event of as many hosts (``h0``, ``h1``, ...) as fit in ``size`` bytes."""
    members, length = [b'"timestamp":1'], 15
    while length + len(member := b'"h%d":1' % len(members)) + 1 <= size:
        members.append(member)
        length += len(member) + 1
    return b"{" + b",".join(members) + b"}"


def time_steps(decoder: Decoder, body: bytes, ndjson: bool) -> tuple[float, float, str]:
    """Total and longest step (ms) of reading ``body`` in slices, and the outcome."""
    steps = []
    outcome = "accepted"
    share = gcpause.Share()  # as POST /counters holds the collector off
    share.take()
    started = last = time.perf_counter()
    try:
        for _ in decoder.slices(body, ndjson):
            now = time.perf_counter()
            steps.append(now - last)
            last = now
    except EventError as error:
        outcome = f"{error.status}: {error.message[:60]}"
    finally:
        share.give_back()
    end = time.perf_counter()
    steps.append(end - last)
    return (end - started) * 1e3, max(steps) * 1e3, outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=Settings().max_body, help="body bytes")
    parser.add_argument("--repeat", type=int, default=3, help="readings per body (best kept)")
    parser.add_argument("--out", default=RESULTS, help="folder for steps.json")
    args = parser.parse_args(argv)
    decoder = Decoder(Settings().max_hosts)
    rows: list[dict[str, Any]] = []
    for name, (body, ndjson) in bodies(args.size, int(time.time())).items():
        readings = [time_steps(decoder, body, ndjson) for _ in range(args.repeat)]
        total, longest, outcome = min(readings, key=lambda r: r[1])
        rows.append(
            {
                "body": name,
                "bytes": len(body),
                "total_ms": round(total, 1),
                "longest_step_ms": round(longest, 1),
                "outcome": outcome,
            }
        )
    command = " ".join(["python -m bench.steps", *(argv if argv is not None else sys.argv[1:])])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "steps.json"), "w") as out:
        json.dump({"command": command, "when": time.time(), "rows": rows}, out, indent=2)
        out.write("\n")
    print(f"| body of {args.size:,} B | total ms | longest step ms | outcome |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['body']} | {row['total_ms']} | {row['longest_step_ms']} | {row['outcome']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
