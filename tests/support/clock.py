"""A clock the tests move by hand."""

from __future__ import annotations

# 2023-11-14 22:13:20 UTC; a round hour plus 33 min 20 s.
T0 = 1_700_000_000


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = float(now)
        self._script: list[float] = []

    def __call__(self) -> float:
        if self._script:
            self.now = self._script.pop(0)
        return self.now

    def script(self, *readings: float) -> None:
        """The next reads return ``readings`` in turn; after them, the last one stays."""
        self._script = [float(r) for r in readings]

    def set(self, now: float) -> None:
        self.now = float(now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
