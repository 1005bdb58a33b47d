"""``tophosts serve``: uvicorn with the tophosts protocol, one process or ``--workers N``.

* :mod:`tophosts.server.protocol`: uvicorn's httptools protocol with request
  read timeouts and load shedding;
* :mod:`tophosts.server.workers`: N worker processes, each on its own
  ``SO_REUSEPORT`` socket.
"""

from __future__ import annotations

import gc
import importlib.util
import ipaddress
import logging
import os
import re
import signal
import tempfile
from typing import TYPE_CHECKING, Any

from tophosts import __version__, config, logs
from tophosts.server import protocol
from tophosts.snapshot import SnapshotError
from tophosts.windows import duration

if TYPE_CHECKING:
    from tophosts.app import TopHosts
    from tophosts.metrics import Metrics

log = logging.getLogger("tophosts")


def uvicorn_options(settings: config.Settings) -> dict[str, Any]:
    """The uvicorn settings of a tophosts server; the bench serves its reference apps
    with these too, so that they differ from tophosts by the app alone."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": protocol.Protocol,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "lifespan": "on",
        "access_log": False,
        "log_level": settings.log_level,
        "log_config": None,
        "server_header": False,
        # Nothing here reads the client address or scheme, so uvicorn's
        # X-Forwarded-* rewriting is pure cost (about 5% of a POST /counter).
        "proxy_headers": False,
    }


def serve(settings: config.Settings, metrics: Metrics | None = None) -> int:
    """Serve until SIGTERM or SIGINT; ``metrics`` replaces the app's own (one worker only:
    the bench's metrics-cost comparison hands a :class:`tophosts.metrics.NullMetrics`)."""
    import uvicorn

    logs.configure(settings.log_level, settings.log_format, access_log=settings.access_log)
    store = redact(settings.store)
    if settings.store != "memory":
        from tophosts.store.redis import describe

        store = f"{describe(settings.store)} prefix={settings.redis_prefix}"
    options = uvicorn_options(settings)
    app = None
    if settings.workers == 1:
        app = _build(settings, metrics)
    log.info(
        "tophosts %s serving on http://%s:%d store=%s workers=%d top=%d max-skew=%ds snapshot=%s "
        "retention=%s history-top=%d access-log=%s",
        __version__,
        settings.host,
        settings.port,
        store,
        settings.workers,
        settings.top,
        settings.max_skew,
        settings.snapshot or "off",
        duration(settings.retention),
        settings.history_top,
        settings.access_log if logs.access.isEnabledFor(logging.INFO) else "off",
    )
    warning = exposure_warning(settings)
    if warning:
        log.warning("%s", warning)
    if app is None:
        from tophosts.server import workers

        # Each worker is a fresh process that builds its own app: hand it the
        # settings through the environment, and uvicorn an import string. The
        # workers share their metrics through prometheus-client's multiprocess
        # directory, so any worker's /metrics answers for all of them.
        with tempfile.TemporaryDirectory(prefix="tophosts-metrics-") as metrics_dir:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
            os.environ.update(settings.environ())
            factory = uvicorn.Config("tophosts.server:worker_app", factory=True, **options)
            return workers.serve(factory, settings.workers)
    # uvicorn re-raises the signal that stopped it once it has shut down
    # gracefully; exit 0 then, so supervisors see a clean stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(app, **options)
    return 0


def _build(settings: config.Settings, metrics: Metrics | None = None) -> TopHosts:
    """The app for one server process, with this process's protocol limits set."""
    from tophosts.app import create_app

    try:
        app = create_app(settings, metrics=metrics)
    except (config.SettingsError, SnapshotError) as exc:
        log.critical("%s", exc)
        raise SystemExit(2) from None
    protocol.configure(
        settings.header_timeout, settings.body_timeout, settings.limit_concurrency, app.shed
    )
    # What start-up built lives as long as the process: out of every collection from
    # now on, so that a full one (which a large batch's objects set off) scans only
    # what requests made. It took 9-19 ms at 8 MiB, 5 ms with this.
    gc.collect()
    gc.freeze()
    return app


def worker_app() -> TopHosts:
    """The app of one ``--workers`` process: uvicorn imports and calls this factory in
    each worker, which gets its settings as ``TOPHOSTS_*`` variables (``Settings.environ``)."""
    settings = config.resolve(None, os.environ)
    logs.configure(settings.log_level, settings.log_format, access_log=settings.access_log)
    return _build(settings)


def exposure_warning(settings: config.Settings) -> str | None:
    """A warning when anyone who can reach the port may post or read counts."""
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if loopback or (settings.ingest_token and settings.read_token):
        return None
    open_routes = [
        name
        for name, token in (("ingest", settings.ingest_token), ("stats", settings.read_token))
        if not token
    ]
    return (
        f"listening on {settings.host} with no token for {' or '.join(open_routes)}: anyone "
        "who can reach this port can use them; see --ingest-token and --read-token"
    )


def redact(url: str) -> str:
    """``url`` with any password replaced, fit for logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
