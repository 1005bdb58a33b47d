"""Logging: readable text by default, one JSON object a line with ``--log-format json``.

Access lines go to the ``tophosts.access`` logger at info level: method, path,
status, duration and body sizes, and for a refused request the reason, never
the body. Which requests get a line is ``--access-log``:

* ``refused`` (the default): every request answered 4xx or 5xx gets its line,
  with its reason; the others get no line, and every :data:`SUMMARY_SECONDS`
  one summary line says how many were answered, by route and status
  (:class:`Summary`, from the counts that ``/metrics`` exports). At 20k requests
  a second, a line each is 2 MB of log a second (BENCHMARKS.md, "The access log").
* ``all``: a line for every request.

Through :mod:`logging`, a line cost about 17 µs per request, a third of a
single-event ``POST /counter``. So once :func:`configure` has set up the
server's logging, :func:`request` only appends a tuple to a list; a timer on the
event loop formats the pending lines about every 100 ms (:data:`FLUSH_SECONDS`)
in exactly the text or JSON the handler would give them, the date and time
prefix computed once per second, and writes them to the same stream with one
``write()``. They are also written before any other log record (so the order
holds), when :data:`MAX_PENDING` are waiting, and at exit. A line so reaches the
log up to ~100 ms after its request; a hard crash (``kill -9``) loses the lines
of the last ~100 ms, and the counts since the last summary.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import msgspec

access = logging.getLogger("tophosts.access")

FLUSH_SECONDS = 0.1
"""Most seconds an access line waits before it is written (while the loop runs)."""
MAX_PENDING = 10_000
"""Access lines held at most; one more writes them at once."""
SUMMARY_SECONDS = 10.0
"""With ``--access-log refused``: seconds between summary lines (:class:`Summary`)."""
ACCESS_LOGS = ("refused", "all")
"""The choices of ``--access-log``: which requests get a line of their own."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MESSAGE = "%s %s %d %.2fms in=%dB out=%dB"
_TEXT_LINE = "%s,%03d INFO tophosts.access: " + _MESSAGE

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# (time.time(), method, path, status, seconds, bytes in, bytes out, error)
Line = tuple[float, str, str, int, float, int, int, "str | None"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


class _JsonLine(msgspec.Struct, omit_defaults=True):
    """An access line as :class:`JsonFormatter` writes its record, fields in that order."""

    time: str
    level: str
    logger: str
    message: str
    method: str
    path: str
    status: int
    duration_ms: float
    bytes_in: int
    bytes_out: int
    error: str | None = None


class Handler(logging.StreamHandler[TextIO]):
    """The one handler of the server: writes the pending access lines before any other
    record of the thread that serves requests, so that the log stays in order."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = _lines
        if lines is not None and lines.pending and lines.thread == threading.get_ident():
            lines.flush()
        super().emit(record)


class AccessLines:
    """Access lines waiting to be written, and how to write them."""

    def __init__(self, handler: Handler, fmt: str) -> None:
        self.handler = handler
        self.json = fmt == "json"
        self.pending: list[Line] = []
        self.timer: asyncio.TimerHandle | None = None
        self.thread = 0  # the thread whose event loop serves the requests
        self._encoder = msgspec.json.Encoder()
        self._second = -1
        self._prefix = ""

    def schedule(self) -> None:
        """Write the pending lines in :data:`FLUSH_SECONDS`, or now without a running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self.thread = threading.get_ident()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Format every pending line and write them with one ``write()``."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch = self.pending
        if not batch:
            return
        self.pending = []
        text = self.format_json(batch) if self.json else self.format_text(batch)
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # as logging does: a broken stream must not break a request
            handler.handleError(logging.makeLogRecord({"msg": "access log write failed"}))
        finally:
            handler.release()

    def format_text(self, batch: list[Line]) -> str:
        """``TEXT_FORMAT`` of each line, as :class:`logging.Formatter` writes it."""
        out: list[str] = []
        append = out.append
        prefix, current = self._prefix, self._second
        for created, method, path, status, seconds, size_in, size_out, error in batch:
            second = int(created)
            if second != current:
                current = second
                prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
            if not path.isprintable() or (error is not None and not error.isprintable()):
                path, error = _printable(path, error)
            # One C-level format per line: a third cheaper than an f-string here.
            line = _TEXT_LINE % (
                prefix,
                (created - second) * 1000,  # %03d truncates, as logging's msecs do
                method,
                path,
                status,
                seconds * 1000,
                size_in,
                size_out,
            )
            append(line if error is None else f"{line} error={error}")
        self._prefix, self._second = prefix, current
        append("")
        return "\n".join(out)

    def format_json(self, batch: list[Line]) -> str:
        """:class:`JsonFormatter` of each line."""
        objects = []
        for created, method, path, status, seconds, size_in, size_out, error in batch:
            # datetime rounds to the microsecond, then isoformat() truncates to ms.
            second = int(created)
            micros = round((created - second) * 1e6)
            if micros >= 1_000_000:
                second, micros = second + 1, micros - 1_000_000
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            message = _MESSAGE % (method, path, status, seconds * 1000, size_in, size_out)
            objects.append(
                _JsonLine(
                    f"{self._prefix}.{micros // 1000:03d}+00:00",
                    "info",
                    "tophosts.access",
                    message if error is None else f"{message} error={error}",
                    method,
                    path,
                    status,
                    round(seconds * 1000, 3),
                    size_in,
                    size_out,
                    error,
                )
            )
        return self._encoder.encode_lines(objects).decode()


def _printable(path: str, error: str | None) -> tuple[str, str | None]:
    """``path`` and ``error`` with their control characters (line breaks, ESC, ...)
    escaped as JSON escapes them (``\\n``, ``\\u001b``), quotes and backslashes too,
    other characters as they are: a path is the client's, percent-decoded, and a line
    break in it must not start a line of its own in a text log."""

    def escaped(text: str) -> str:
        return text if text.isprintable() else msgspec.json.encode(text).decode()[1:-1]

    return escaped(path), None if error is None else escaped(error)


_lines: AccessLines | None = None

every = True
"""Whether a request answered below 400 gets a line of its own: ``--access-log all``, and
any process whose logging :func:`configure` did not set up."""


def wanted(status: int) -> bool:
    """Whether a request answered ``status`` gets an access line; ask before :func:`request`."""
    return (every or status >= 400) and access.isEnabledFor(logging.INFO)


class Summary:
    """With ``--access-log refused``, called every :data:`SUMMARY_SECONDS`: one line of the
    requests answered below 400 since the last call, if any, by route and status.

    ``counts`` are the process's own request counts, the ones ``/metrics`` exports
    (route -> status -> requests, cumulative, updated in place): the requests are
    counted once, and a request that gets no line of its own costs nothing here.
    """

    def __init__(self, counts: Mapping[str, Mapping[int, int]]) -> None:
        self.counts = counts
        self.seen = self._answered()
        self.since = time.monotonic()

    def _answered(self) -> dict[str, int]:
        return {
            f"{route} {status}": n
            for route, statuses in self.counts.items()
            for status, n in statuses.items()
            if status < 400
        }

    def __call__(self) -> None:
        now, answered = time.monotonic(), self._answered()
        new = [(key, n - self.seen.get(key, 0)) for key, n in answered.items()]
        ranked = sorted(((key, n) for key, n in new if n > 0), key=lambda kv: (-kv[1], kv[0]))
        seconds = now - self.since
        self.seen, self.since = answered, now
        if not ranked:
            return
        total = sum(n for _, n in ranked)
        access.info(
            "%d %s answered in %.1fs (%s)",
            total,
            "request" if total == 1 else "requests",
            seconds,
            ", ".join(f"{key}: {n}" for key, n in ranked),
            extra={"requests": total, "seconds": round(seconds, 3), "answered": dict(ranked)},
        )


def flush() -> None:
    """Write the access lines still pending (at exit, say)."""
    if _lines is not None:
        _lines.flush()


atexit.register(flush)


def configure(level: str, fmt: str, stream: TextIO | None = None, access_log: str = "all") -> None:
    """Route every logger, uvicorn's included, through one handler on ``stream`` (stderr),
    and the access lines through :class:`AccessLines` to the same stream; ``access_log``
    is one of :data:`ACCESS_LOGS`."""
    global _lines, every
    flush()
    handler = Handler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _lines = AccessLines(handler, fmt)
    every = access_log == "all"


def request(
    method: str,
    path: str,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
    error: str | None = None,
) -> None:
    """Log one answered request; callers check :func:`wanted` first.

    Once :func:`configure` ran, the line is queued (see the module docstring);
    before, it goes through :mod:`logging` as a record with the fields as extras.
    """
    lines = _lines
    if lines is not None:
        pending = lines.pending
        pending.append((time.time(), method, path, status, seconds, bytes_in, bytes_out, error))
        if len(pending) == 1:
            lines.schedule()
        elif len(pending) >= MAX_PENDING:
            lines.flush()
        return
    if not path.isprintable() or (error is not None and not error.isprintable()):
        path, error = _printable(path, error)
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }
    if error is None:
        access.info(
            "%s %s %d %.2fms in=%dB out=%dB",
            method, path, status, seconds * 1000, bytes_in, bytes_out,
            extra=fields,
        )  # fmt: skip
    else:
        fields["error"] = error
        access.info(
            "%s %s %d %.2fms in=%dB out=%dB error=%s",
            method, path, status, seconds * 1000, bytes_in, bytes_out, error,
            extra=fields,
        )  # fmt: skip
