"""A clock the tests move by hand."""

from __future__ import annotations

# 2023-11-14 22:13:20 UTC; a round hour plus 33 min 20 s.
T0 = 1_700_000_000


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = float(now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
