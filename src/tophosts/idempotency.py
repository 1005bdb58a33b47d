"""Idempotency keys: the ``Idempotency-Key`` header, what a store keeps of a key, and
every error text about keys. Pure: no I/O, no clock of its own.

A request sent with a key has its outcome kept by the store, atomically with its
counts, so that a retry with the same key and the same request (path and raw
body) is answered with that outcome instead of being applied again. What a
store keeps of a key is small and fixed in size:

- the key's *digest*, 15 bytes of BLAKE2b: never the key itself;
- the request's *fingerprint*, 40 bits of XXH3 over the path and the raw body,
  to tell a retry from another request reusing the key;
- the outcome, which follows from one int: how many of the request's events
  were expired. A replay's body is built from it and the events of the retry
  (the same body, so the same events): ``/counter`` answers ``ok`` or
  ``expired``, ``/counters`` its ``accepted`` and ``expired``.

Only outcomes that applied the request (200, ``expired`` included) are kept; a
refusal changed nothing and is tried afresh on a retry.

Keys expire a minute's worth at a time: a key used in the minute starting at
``m`` is kept until ``m + 60 + ttl`` (ttl rounded up to a minute), so at least
``--idempotency-ttl`` and at most a minute more.
"""

from __future__ import annotations

import hashlib
import re

import xxhash

from tophosts.events import EventError
from tophosts.windows import MINUTE, minute_of

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
"""The header of an answer that is the replay of a kept outcome."""

MAX_KEY = 255
MAX_EVENTS = 2**24 - 1
"""Most events in one request with a key, so that its record fits 64 bits (snapshots)."""
DIGEST_BYTES = 15
FINGERPRINT_BITS = 40
_FINGERPRINT_MASK = (1 << FINGERPRINT_BITS) - 1
_VISIBLE = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_KEY)

REASONS = ("fingerprint", "in_flight", "full")
"""Why a request with a key was refused (the metrics' ``reason`` label)."""


Keyed = tuple[bytes, int]
"""What a store is given with a request that carries a key: ``(digest, fingerprint)``.
A plain tuple: a NamedTuple costs more to build than the rest of a lookup."""


def digest(raw: bytes) -> bytes:
    """The digest of a valid key (see :func:`check`).

    BLAKE2b, a cryptographic hash: clients choose keys, so finding two that collide
    must be out of reach. It costs about 0.5 us for a key.
    """
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest()


def check(raw: bytes) -> str:
    """The key of an ``Idempotency-Key`` header value, or :class:`EventError` (400)."""
    if _VISIBLE.fullmatch(raw) is None:
        raise EventError(_bad_key(raw))
    return raw.decode("ascii")


def fingerprint(path: bytes, body: bytes) -> int:
    """40 bits that tell one request (path and raw body) from another.

    XXH3, a checksum, not a defence: the fingerprint only catches a client that
    reuses its own key for another request. It reads about 50 bytes a nanosecond
    (1.2 us for a batch of 1,000 events, where SHA-1 takes 33 us with the CPU's
    SHA instructions and several times that without).
    """
    return xxhash.xxh3_64_intdigest(body, seed=xxhash.xxh3_64_intdigest(path)) & (_FINGERPRINT_MASK)


def pack(fingerprint: int, expired: int) -> int:
    """A kept outcome as one int (below 2^60, so 32 bytes in CPython, for up to
    2^20 expired events in one request)."""
    return fingerprint | expired << FINGERPRINT_BITS


def unpack(record: int) -> tuple[int, int]:
    """``(fingerprint, expired)`` of a :func:`pack` ed record."""
    return record & _FINGERPRINT_MASK, record >> FINGERPRINT_BITS


def kept_for(ttl: int) -> int:
    """Seconds a key is kept after the end of the minute it was used in: ``ttl`` rounded
    up to a whole minute, so that keys expire on minute boundaries."""
    return -(-ttl // MINUTE) * MINUTE


def expiry(now: float, ttl: int) -> int:
    """When a key used at ``now`` expires: it is kept while the clock reads less."""
    return minute_of(int(now)) + MINUTE + kept_for(ttl)


# -- refusals -------------------------------------------------------------------


class KeyRefused(Exception):
    """A request with a key that was refused for the key's sake; nothing was applied.

    Stores raise the subclasses without the key (they keep only its digest); the
    ingest route words the answer with it (:func:`message`).
    """

    reason = ""
    status = 0


class KeyConflict(KeyRefused):
    """The key was used before for a different request (path or body)."""

    reason = "fingerprint"
    status = 422


class KeyInFlight(KeyRefused):
    """A request with this key is still being handled."""

    reason = "in_flight"
    status = 409


class KeysFull(KeyRefused):
    """The store keeps ``--max-idempotency-keys`` live keys: a new one is refused."""

    reason = "full"
    status = 429

    def __init__(self, limit: int, ttl: int) -> None:
        super().__init__(limit, ttl)
        self.limit = limit
        self.ttl = ttl


def message(exc: KeyRefused, key: str) -> str:
    """The error text of a refusal, naming the key."""
    shown = _show(key)
    if isinstance(exc, KeyConflict):
        return (
            f"Idempotency-Key {shown} was used for a different request (another path or "
            "body); nothing was applied. A retry must repeat its request byte for byte; "
            "a new request needs a new key"
        )
    if isinstance(exc, KeyInFlight):
        return (
            f"a request with Idempotency-Key {shown} is still being handled; nothing was "
            "applied. Retry after Retry-After: the answer is then that request's outcome"
        )
    if isinstance(exc, KeysFull):
        return (
            f"the store already keeps {exc.limit} Idempotency-Keys "
            f"(--max-idempotency-keys), each for {exc.ttl} s (--idempotency-ttl); a request "
            "with a new key is refused until older keys expire, and nothing of it was "
            "applied. Retries of known keys, and requests without a key, are served"
        )
    raise AssertionError(f"unknown refusal {exc!r}")  # pragma: no cover


def too_many_events(n: int) -> EventError:
    return EventError(
        f"a request with an Idempotency-Key holds at most {MAX_EVENTS} events; this one "
        f"holds {n}: split it into several requests, each with its own key"
    )


def repeated() -> EventError:
    return EventError(
        "the request has more than one Idempotency-Key header; send exactly one, "
        "of 1 to 255 visible ASCII characters"
    )


def _bad_key(raw: bytes) -> str:
    rule = "an Idempotency-Key is 1 to 255 visible ASCII characters (! to ~, no spaces)"
    if not raw:
        return f"{rule}; this one is empty"
    if len(raw) > MAX_KEY:
        return f"{rule}; this one is {len(raw)} bytes long"
    at = next(i for i, byte in enumerate(raw) if not 0x21 <= byte <= 0x7E)
    return f"{rule}; this one has byte 0x{raw[at]:02x} at position {at}"


def _show(key: str, limit: int = 60) -> str:
    return f'"{key}"' if len(key) <= limit else f'"{key[: limit - 3]}..."'
