"""Clock-aligned window arithmetic: every floor, start, live set and lifetime.

Windows are aligned to the Unix epoch (UTC), so local time zones and DST never
shift them. A window is the half-open interval ``[start, start + size)``. It
is asked about while it is the *past* window, so it lives until
``start + 2 * size``; nothing else in tophosts computes a floor itself.

History: at ``start + 2 * size`` a window *freezes* (:func:`ends`): from then on
no event can change it, and its top hosts are kept for ``--retention`` seconds
more (:func:`kept_until`), then dropped.

The functions take sizes in seconds (``MINUTE``, ``HOUR``) because they run
once or twice per event on the ingest path, where an enum lookup costs more
than the arithmetic.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

MINUTE = 60
HOUR = 3600


class Window(enum.Enum):
    """The two windows anyone can ask about."""

    MINUTE = MINUTE
    HOUR = HOUR

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Window:
        """``"minute"`` -> ``Window.MINUTE``; raises ``KeyError`` for anything else."""
        return cls[label.upper()]


class Span(NamedTuple):
    start: int
    end: int


def floor(timestamp: int, size: int) -> int:
    """Start of the window of ``size`` seconds that holds ``timestamp``."""
    return timestamp - timestamp % size


def minute_of(timestamp: int) -> int:
    """Start of the minute that holds ``timestamp``."""
    return timestamp - timestamp % MINUTE


def hour_of(timestamp: int) -> int:
    """Start of the hour that holds ``timestamp``."""
    return timestamp - timestamp % HOUR


def label(size: int) -> str:
    """``"minute"`` or ``"hour"``, for messages."""
    return "minute" if size == MINUTE else "hour"


def past(now: float, window: Window) -> Span:
    """The past round window at clock reading ``now``.

    At 10:32:15 the past minute is [10:31:00, 10:32:00) and the past hour is
    [09:00, 10:00).
    """
    size = window.value
    end = int(now // size) * size
    return Span(end - size, end)


class Floors(NamedTuple):
    """The oldest live window starts at a clock reading: nothing older can be asked about."""

    minute: int
    hour: int


def floors(now: float) -> Floors:
    """The starts of the past minute and the past hour at ``now``.

    An event at or after ``floors.minute`` still counts in a minute someone can
    ask about; one before ``floors.hour`` counts nowhere any more (expired).
    """
    return Floors(int(now // MINUTE) * MINUTE - MINUTE, int(now // HOUR) * HOUR - HOUR)


def minute_span(now: float) -> tuple[int, int]:
    """The minute holding ``now``, as ``[start, end)``: a store whose clock reads within
    it need not roll its windows, which it can tell with two comparisons."""
    start = int(now // MINUTE) * MINUTE
    return start, start + MINUTE


def ends(size: int, start: int) -> int:
    """When the window ``(size, start)`` can no longer be asked about: it was the past
    window until then."""
    return start + 2 * size


def settled_after(max_skew: int) -> int:
    """Seconds from now after which no event accepted now can change a window anyone can
    ask about: an event at most ``max_skew`` ahead lands in an hour that is asked about
    until 2 h after its start. The default lifetime of an idempotency key."""
    return ends(HOUR, 0) + max_skew


def aligned(size: int, start: int) -> bool:
    """Whether ``start`` is the start of a window of ``size`` (aligned to it)."""
    return start % size == 0


def starts(size: int, since: int, until: float) -> range:
    """The starts of the windows of ``size`` from the one holding ``since`` to the one
    holding ``until`` (inclusive)."""
    return range(floor(since, size), int(until) + 1, size)


def kept_until(size: int, start: int, retention: int) -> int:
    """When the frozen window ``(size, start)`` leaves the history: ``retention`` seconds
    after it froze (at :func:`ends`)."""
    return ends(size, start) + retention


class Place(enum.Enum):
    """Where a window stands at a clock reading, for a query about it."""

    OPEN = "open"
    """The current window or a later one: not closed yet."""
    PAST = "past"
    """The past window: answered live, as ``GET /stats`` answers it."""
    KEPT = "kept"
    """Frozen, and within the retention."""
    GONE = "gone"
    """Frozen longer ago than the retention."""


def place(now: float, size: int, start: int, retention: int) -> Place:
    """Where the window ``(size, start)`` stands at ``now`` with ``retention`` seconds
    of history."""
    past_start = int(now // size) * size - size
    if start > past_start:
        return Place.OPEN
    if start == past_start:
        return Place.PAST
    return Place.KEPT if now < kept_until(size, start, retention) else Place.GONE


def oldest_kept(now: float, size: int, retention: int) -> int:
    """The start of the oldest window of ``size`` that history still holds at ``now``
    (the past window's own start when nothing older is kept)."""
    past_start = int(now // size) * size - size
    # The smallest aligned start s with now < s + 2 * size + retention.
    first = int((now - 2 * size - retention) // size) * size + size
    return min(first, past_start)


def due(size: int, after: float, until: float) -> range:
    """The starts of the windows of ``size`` that freeze in ``(after, until]``."""
    first = int((after - 2 * size) // size) * size + size
    return range(first, int((until - 2 * size) // size) * size + 1, size)


def duration(seconds: int) -> str:
    """A retention as people write it: ``90m``, ``24h``, ``7d``; ``0`` for none."""
    if seconds == 0:
        return "0"
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
