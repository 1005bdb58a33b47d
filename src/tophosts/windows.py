"""Clock-aligned window arithmetic.

Windows are aligned to the Unix epoch (UTC), so local time zones and DST never
shift them. A window is the half-open interval ``[start, start + size)``.
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


def bucket(timestamp: int, size: int) -> int:
    """Start of the clock-aligned window of ``size`` seconds that holds ``timestamp``."""
    return timestamp - timestamp % size


def past(now: float, window: Window) -> Span:
    """The past round window at clock reading ``now``.

    At 10:32:15 the past minute is [10:31:00, 10:32:00) and the past hour is
    [09:00, 10:00).
    """
    size = window.value
    end = int(now // size) * size
    return Span(end - size, end)


def oldest_live(now: float) -> int:
    """The earliest timestamp any query can still reach: the start of the past hour."""
    return past(now, Window.HOUR).start
