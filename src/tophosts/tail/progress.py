"""Progress: lines per second, the lag behind each file, and the last acknowledged batch.

On a terminal it is one status line (rich), redrawn a few times a second, with
the log lines scrolling above it. Otherwise (a service, a pipe) it is one log
line every 10 seconds, on the ``tophosts.tail`` logger.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

log = logging.getLogger("tophosts.tail")


@dataclasses.dataclass(frozen=True)
class Ack:
    path: str
    start: int
    end: int
    events: int
    replayed: bool
    at: float


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


class Progress:
    """Counts what happened, and says so every ``every`` seconds (or continuously on a TTY)."""

    def __init__(self, clock: Callable[[], float], every: float = 10.0) -> None:
        self.clock = clock
        self.every = every
        self.shipped = 0
        self.bad = 0
        self.refused = 0
        self.last: Ack | None = None
        self.lags: dict[str, int] = {}
        self._since = clock()
        self._shipped_then = 0
        self._rate = 0.0

    def acked(self, ack: Ack, lines: int) -> None:
        self.last = ack
        self.shipped += lines

    def line(self) -> str:
        """The status, in one line."""
        lag = sum(self.lags.values())
        files = ", ".join(f"{path} {size(n)}" for path, n in sorted(self.lags.items()))
        text = f"{self._rate:,.0f} lines/s; lag {size(lag)}"
        if len(self.lags) > 0:
            text += f" ({files})"
        if self.last is None:
            text += "; no batch acknowledged yet"
        else:
            a = self.last
            text += (
                f"; last batch {a.path} {a.start}-{a.end} ({a.events} events"
                f"{', replayed' if a.replayed else ''}) acknowledged "
                f"{max(0.0, self.clock() - a.at):.1f} s ago"
            )
        text += f"; shipped {self.shipped:,}, bad {self.bad:,}, refused {self.refused:,}"
        return text

    def _measure(self) -> float:
        now = self.clock()
        elapsed = now - self._since
        if elapsed > 0:
            self._rate = (self.shipped - self._shipped_then) / elapsed
        self._since, self._shipped_then = now, self.shipped
        return now

    def tick(self, lags: Iterable[tuple[str, int]]) -> None:
        """Called from the shipper's loop: log a line when ``every`` seconds have passed."""
        self.lags = dict(lags)
        if self.clock() - self._since >= self.every:
            self._measure()
            log.info("%s", self.line())

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class TtyProgress(Progress):
    """The same figures as one rich status line, redrawn four times a second."""

    def __init__(self, clock: Callable[[], float], stream: TextIO | None = None) -> None:
        super().__init__(clock, every=1.0)
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._stream = stream or sys.stderr
        self._console = Console(file=self._stream)
        self._live = Live(
            Text(""), console=self._console, refresh_per_second=4, transient=True,
            redirect_stdout=False, redirect_stderr=False,
        )  # fmt: skip
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def tick(self, lags: Iterable[tuple[str, int]]) -> None:
        self.lags = dict(lags)
        if self.clock() - self._since >= self.every:
            self._measure()
        self._live.update(self._text(self.line(), no_wrap=True, overflow="ellipsis"))

    def start(self) -> None:
        self._live.start()
        # Log lines to the same terminal go through the live display's console, so
        # that they scroll above the status line instead of tearing it.
        stream = _ConsoleStream(self._console)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._stream:
                self._handlers.append((handler, handler.setStream(stream)))

    def stop(self) -> None:
        for handler, old in self._handlers:
            handler.setStream(old)
        self._handlers.clear()
        self._live.stop()


class _ConsoleStream:
    """A text stream that prints through a rich console, above its live display."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


def for_stream(clock: Callable[[], float], stream: TextIO | None = None) -> Progress:
    """A status line on a terminal, log lines every 10 s otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return TtyProgress(clock, stream)
    return Progress(clock)
