"""What each listener received, by result and by reason; and example lines, rate-limited.

Plain integers bumped on the receiving path, read by the metrics collector
(:mod:`tophosts.syslog.metrics`) when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tophosts.formats import Parsed
from tophosts.syslog.lines import LineError

log = logging.getLogger("tophosts.syslog")

RESULTS = ("accepted", "expired", "refused", "unparsed")
EXAMPLE_EVERY = 10.0
"""Seconds between two example lines logged for the same listener and reason."""


class Tally:
    """The counts of one listener."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines = dict.fromkeys(RESULTS, 0)
        """Lines by result; every line received lands in exactly one, once."""
        self.reasons: dict[str, int] = {}
        """Unparsed and refused lines by reason (``header``, ``too_far_ahead``, ...)."""
        self.closed: dict[str, int] = {}
        """TCP connections this side closed, by reason."""
        self.connections = 0
        self.received = 0
        """Lines received, as the listeners count them (summed up at shutdown)."""
        self.rcvbuf = 0
        self.drops_of: list[int] = []
        """The socket inodes whose kernel drops are this listener's (UDP)."""
        self._logged: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def parsed(self, careful: Callable[[bytes], Parsed], line: bytes, what: str) -> Parsed | None:
        """``careful(line)``; or ``None``, the line counted as unparsed with its reason. A
        parser bug is logged, never raised: it must not stall a connection or a listener."""
        try:
            return careful(line)
        except LineError as exc:
            self.bad("unparsed", exc.reason, 1, str(exc), line)
        except Exception as exc:
            log.exception("syslog %s: reading %s failed", self.name, what)
            self.bad("unparsed", "error", 1, repr(exc), line)
        return None

    def bad(self, result: str, reason: str, lines: int, detail: str, example: object) -> None:
        """Count ``lines`` unparsed or refused lines, and log an example now and then."""
        self.lines[result] += lines
        self.reasons[reason] = self.reasons.get(reason, 0) + lines
        now = time.monotonic()
        last = self._logged.get(reason)
        if last is not None and now - last < EXAMPLE_EVERY:
            self._quiet[reason] = self._quiet.get(reason, 0) + lines
            return
        self._logged[reason] = now
        quiet = self._quiet.pop(reason, 0)
        more = f" ({quiet} more since the last example)" if quiet else ""
        log.warning(
            "syslog %s: %s line (%s): %s; for example %s%s",
            self.name,
            result,
            reason,
            detail,
            _show(example),
            more,
        )

    def stopped(self) -> None:
        """Log what this listener received and what became of it."""
        lines = self.lines
        log.info(
            "syslog %s: stopped; %d lines received: %d accepted, %d expired, %d refused, "
            "%d unparsed",
            self.name,
            self.received,
            *(lines[result] for result in RESULTS),
        )

    def close(self, reason: str, detail: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        log.info("syslog %s: closed a connection (%s): %s", self.name, reason, detail)


def _show(example: object, limit: int = 200) -> str:
    text = repr(example)
    return text if len(text) <= limit else text[: limit - 3] + "..."
