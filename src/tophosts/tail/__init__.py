"""``tophosts tail``: ship access-log files to a tophosts server, every line exactly once.

The modules, one idea each:

- ``settings``: the flags and ``TOPHOSTS_TAIL_*`` variables;
- ``files``: file identity and rotation (rename, copytruncate, globs, files that
  appear later), by polling;
- ``reader``: complete lines from an offset;
- ``batch``: lines aggregated per ``(second, host)`` into one ``POST /counters``;
- ``keys``: the ``Idempotency-Key`` of a batch, from its file and byte range;
- ``state``: the state file (acknowledged offsets and the pending range), atomic;
- ``client``: posting, and what each answer means (retry, backoff, jitter);
- ``progress`` and ``metrics``: the status line or log line, and ``--metrics-port``;
- ``shipper``: the loop that ties them, and SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from tophosts.tail.settings import SettingsError, add_arguments, resolve

__all__ = ["add_arguments", "run"]

log = logging.getLogger("tophosts.tail")


def run(args: argparse.Namespace) -> int:
    try:
        settings = resolve(args, os.environ)
    except SettingsError as exc:
        print(f"tophosts tail: {exc}", file=sys.stderr)
        return 2
    from tophosts import logs
    from tophosts.tail import progress
    from tophosts.tail.metrics import Metrics
    from tophosts.tail.shipper import Shipper

    logs.configure(settings.log_level, settings.log_format)
    metrics = Metrics()
    if settings.metrics_port is not None:
        try:
            port = metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            print(
                f"tophosts tail: --metrics-port {settings.metrics_port}: cannot listen on "
                f"{settings.metrics_host}:{settings.metrics_port} ({exc.strerror}); "
                "choose a free port",
                file=sys.stderr,
            )
            return 2
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    shipper = Shipper(settings, metrics=metrics, progress=progress.for_stream(time.monotonic))
    shipper.handle_signals()
    log.info(
        "tophosts tail: %s (%s) to %s, state %s, every %g s",
        " ".join(settings.paths),
        settings.format,
        settings.url,
        settings.state,
        settings.interval,
    )
    return shipper.run()
