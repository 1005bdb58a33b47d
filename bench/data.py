"""Synthetic events, built straight as JSON bytes so the client stays cheap."""

from __future__ import annotations

import random
from collections.abc import Iterator

PER_EVENT = 5


def host(n: int) -> str:
    return f"host{n}.example.com"


class Events:
    """Events of ``PER_EVENT`` distinct hosts drawn from a pool of ``hosts``.

    A few thousand host fragments are drawn once; each event is a timestamp
    plus one fragment, so building a million events costs little.
    """

    def __init__(self, hosts: int, seed: int = 1, fragments: int = 4096) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.fragments = [
            ",".join(
                f'"{host(h)}":{rng.randint(1, 9)}' for h in rng.sample(range(hosts), PER_EVENT)
            )
            for _ in range(max(fragments, 2 * hosts // PER_EVENT))
        ]

    def event(self, timestamp: int) -> str:
        return f'{{"timestamp":{timestamp},{self.rng.choice(self.fragments)}}}'

    def bodies(self, count: int, start: int, end: int) -> list[bytes]:
        """``count`` single-event bodies stamped uniformly in ``[start, end)``."""
        rand = self.rng.randrange
        return [self.event(rand(start, end)).encode() for _ in range(count)]

    def batch(self, count: int, start: int, end: int) -> bytes:
        """A ``POST /counters`` body of ``count`` events stamped in ``[start, end)``."""
        rand = self.rng.randrange
        return ("[" + ",".join(self.event(rand(start, end)) for _ in range(count)) + "]").encode()

    def batches(self, total: int, start: int, end: int, size: int = 1000) -> Iterator[bytes]:
        for done in range(0, total, size):
            yield self.batch(min(size, total - done), start, end)


def distinct_batches(hosts: int, start: int, end: int, size: int = 1000) -> Iterator[bytes]:
    """Batches naming ``hosts`` distinct hosts, ``PER_EVENT`` new ones per event."""
    rng = random.Random(2)
    events = -(-hosts // PER_EVENT)
    for first in range(0, events, size):
        parts = []
        for e in range(first, min(first + size, events)):
            names = range(e * PER_EVENT, min((e + 1) * PER_EVENT, hosts))
            counts = ",".join(f'"d{n}.example.net":1' for n in names)
            parts.append(f'{{"timestamp":{rng.randrange(start, end)},{counts}}}')
        yield ("[" + ",".join(parts) + "]").encode()


def junk_batches(
    first: int, count: int, start: int, end: int, per_event: int = 10_000, per_batch: int = 10
) -> Iterator[bytes]:
    """Batches naming the ``count`` junk hosts ``j<first>.junk`` on, ``per_event`` to an
    event (at most ``--max-hosts``), stamped in ``[start, end)``: what fills a window."""
    rng = random.Random(first)
    names = range(first, first + count)
    events = [names[i : i + per_event] for i in range(0, count, per_event)]
    for i in range(0, len(events), per_batch):
        parts = []
        for chunk in events[i : i + per_batch]:
            counts = ",".join(f'"j{n}.junk":1' for n in chunk)
            parts.append(f'{{"timestamp":{rng.randrange(start, end)},{counts}}}')
        yield ("[" + ",".join(parts) + "]").encode()


def wide_event(hosts: int, timestamp: int, prefix: str = "w") -> bytes:
    """One event of ``hosts`` hosts ``<prefix>0.wide`` on, a count of 1 each."""
    counts = ",".join(f'"{prefix}{n}.wide":1' for n in range(hosts))
    return f'{{"timestamp":{timestamp},{counts}}}'.encode()


def batch_of_size(size: int, start: int, end: int, hosts: int = 10_000) -> tuple[bytes, int]:
    """A ``POST /counters`` body of exactly ``size`` bytes (padded with spaces after the
    array) and the number of events in it."""
    events = Events(hosts, seed=5)
    rand = events.rng.randrange
    parts: list[str] = []
    length = 2  # the brackets
    while True:
        event = events.event(rand(start, end))
        if length + len(event) + (1 if parts else 0) > size:
            break
        length += len(event) + (1 if parts else 0)
        parts.append(event)
    body = ("[" + ",".join(parts) + "]").encode()
    return body + b" " * (size - len(body)), len(parts)
