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
