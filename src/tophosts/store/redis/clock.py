"""Where the Redis clock stands against this process's monotonic clock.

An ingest call carries a deadline on the Redis clock to start by, so that a
call Redis only gets to after the client may have given up changes nothing;
settling a call waits until that deadline has passed. Both need the offset
between the clocks, which is bounded from every reply that carries Redis's
TIME: the reading was taken after the call was sent and before its reply
arrived.
"""

from __future__ import annotations

import time


class RedisClock:
    def __init__(self) -> None:
        self.offset: tuple[float, float] | None = None
        """Bounds on (Redis clock - time.monotonic()), or None before the first reading."""

    def reset(self) -> None:
        self.offset = None

    def observe(self, sec: int | bytes, usec: int | bytes, sent: float, received: float) -> None:
        """Narrow the bounds with one reading taken between ``sent`` and ``received``."""
        redis_now = int(sec) + int(usec) / 1e6
        low, high = redis_now - received, redis_now - sent
        if self.offset is not None:
            old_low, old_high = self.offset
            if low <= old_high and old_low <= high:
                low, high = max(low, old_low), min(high, old_high)
            # else: a clock stepped; start again from this reading.
        self.offset = (low, high)

    def deadline(self, monotonic: float) -> int:
        """The Redis clock, in microseconds, at the latest when this process's monotonic
        clock reads ``monotonic``."""
        assert self.offset is not None
        return int((monotonic + self.offset[0]) * 1e6)

    @staticmethod
    def now() -> float:
        return time.monotonic()
