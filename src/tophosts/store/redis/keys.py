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
``<prefix>:key:<digest>``
    One idempotency key (its digest in hex, never the key itself): while its
    request's body is still arriving, the in-flight mark ``f:<token>``
    (claim.lua), which lasts at most ``--body-timeout`` plus
    ``--redis-timeout``; once its outcome is kept,
    ``<expiry>:<fingerprint>:<expired>``, written by the ingest script in the
    same call as the counts, with a PEXPIRE until ``<expiry>`` (the instance
    clock's Unix seconds; see :func:`tophosts.idempotency.expiry`).
``<prefix>:keys``
    A sorted set of the kept keys' digests, scored by their expiry: what
    ``--max-idempotency-keys`` counts. The ingest scripts trim it as they go.
"""

from __future__ import annotations

import math

from tophosts.windows import MINUTE, ends


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.writes = f"{prefix}:writes"
        self.index = f"{prefix}:keys"

    def key(self, digest: bytes) -> str:
        """The record (or in-flight mark) of the idempotency key of ``digest``."""
        return f"{self.prefix}:key:{digest.hex()}"

    def window(self, size: int, start: int) -> str:
        """The sorted set holding the window of ``size`` seconds that starts at ``start``."""
        return f"{self.prefix}:{'m' if size == MINUTE else 'h'}:{start}"


def ttl_ms(size: int, start: int, now: float) -> int:
    """Milliseconds from ``now`` until the window can no longer be asked about; at
    least 1, since the window can turn between a request and its write."""
    return max(1, math.ceil((ends(size, start) - now) * 1000))
