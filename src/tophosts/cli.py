"""``tophosts serve|load|bench``: the command line."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from tophosts import __version__, config

log = logging.getLogger("tophosts")


def serve(settings: config.Settings) -> int:
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = settings.store
    if store != "memory":
        from tophosts.store.redis import describe

        store = f"{describe(store)} prefix={settings.redis_prefix}"
    log.info(
        "tophosts %s serving on http://%s:%d workers=%d store=%s top=%d max-skew=%ds "
        "max-body=%d max-hosts=%d",
        __version__,
        settings.host,
        settings.port,
        settings.workers,
        store,
        settings.top,
        settings.max_skew,
        settings.max_body,
        settings.max_hosts,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_level": settings.log_level,
        "server_header": False,
    }
    if settings.workers > 1:
        from tophosts import workers

        # Each worker is a fresh process that builds its own app: hand it the
        # settings through the environment, and uvicorn an import string.
        os.environ.update(settings.environ())
        factory = uvicorn.Config("tophosts.app:app_from_environ", factory=True, **options)
        return workers.serve(factory, settings.workers)

    from tophosts.app import create_app

    # uvicorn re-raises the signal that stopped it once it has shut down
    # gracefully; exit 0 then, so supervisors see a clean stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(create_app(settings), **options)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tophosts",
        description="Top hosts by requests in the past round minute and hour.",
    )
    parser.add_argument("--version", action="version", version=f"tophosts {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP service")
    config.add_arguments(serve_parser)
    load_parser = commands.add_parser("load", help="send synthetic counters to a server")
    from tophosts import load

    load.add_arguments(load_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = config.resolve(args, os.environ)
        except config.SettingsError as exc:
            print(f"tophosts: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "load":
        from tophosts import load

        return load.run(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse exits first
