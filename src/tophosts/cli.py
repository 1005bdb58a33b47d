"""``tophosts serve|load|tail``: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tophosts import __version__, config


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
    tail_parser = commands.add_parser(
        "tail", help="ship access-log files to a tophosts server, every line exactly once"
    )
    from tophosts import tail

    tail.add_arguments(tail_parser)
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
        from tophosts.server import serve

        return serve(settings)
    if args.command == "load":
        from tophosts import load

        return load.run(args)
    if args.command == "tail":
        from tophosts import tail

        return tail.run(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse exits first
