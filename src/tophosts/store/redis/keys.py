"""The key layout of the Redis store, and each key's lifetime.

``<prefix>:m:<minute_start>`` and ``<prefix>:h:<hour_start>``
    One sorted set per window: member = host, score = its count in that
    window. A window is asked about while it is the past window, so its key
    expires when that ends (:func:`tophosts.windows.ends`: 120 s after a
    minute's start, 7200 s after an hour's), relative to the app clock: each
    write sets that TTL (PEXPIRE), so Redis drops a key as soon as no query
    can reach it.
``<prefix>:writes``
    A hash of write records, one field per write token (see settle.lua).
"""

from __future__ import annotations

import math

from tophosts.windows import MINUTE, ends


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.writes = f"{prefix}:writes"

    def window(self, size: int, start: int) -> str:
        """The sorted set holding the window of ``size`` seconds that starts at ``start``."""
        return f"{self.prefix}:{'m' if size == MINUTE else 'h'}:{start}"


def ttl_ms(size: int, start: int, now: float) -> int:
    """Milliseconds from ``now`` until the window can no longer be asked about; at
    least 1, since the window can turn between a request and its write."""
    return max(1, math.ceil((ends(size, start) - now) * 1000))
