"""Logging: readable text by default, one JSON object a line with ``--log-format json``.

Each request is one line on the ``tophosts.access`` logger at info level:
method, path, status, duration and body sizes, and for a refused request the
reason, never the body.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import msgspec

access = logging.getLogger("tophosts.access")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


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


def configure(level: str, fmt: str) -> None:
    """Route every logger, uvicorn's included, through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def request(
    method: str,
    path: str,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
    error: str | None = None,
) -> None:
    """Log one answered request; callers check ``access.isEnabledFor(logging.INFO)`` first."""
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
