"""``tophosts tail`` settings: a flag each, and a ``TOPHOSTS_TAIL_*`` variable each.

The paths and globs to follow are the command's operands. Every other setting
is a flag (``--interval``) and a variable (``TOPHOSTS_TAIL_INTERVAL``); a flag
wins over its variable, and a bad value stops start-up with one line naming
the flag or variable, the value and what is accepted. The variables have their
own ``TAIL_`` prefix so that a ``tophosts serve`` and a ``tophosts tail`` on one
machine never read each other's (``TOPHOSTS_LOG_LEVEL`` stays the server's).
The value parsers are the server's own (``tophosts.config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tophosts import config
from tophosts.formats import LOG_FILE_FORMATS

ENV_PREFIX = "TOPHOSTS_TAIL_"


@dataclasses.dataclass(frozen=True)
class TailSettings:
    paths: tuple[str, ...] = ()
    format: str = ""
    url: str = "http://127.0.0.1:8080"
    ingest_token: str = dataclasses.field(default="", repr=False)
    state: str = "/var/lib/tophosts/tail.state"
    from_start: bool = False
    interval: float = 1.0
    max_batch: int = 10_000
    timeout: float = 10.0
    rotate_wait: float = 5.0
    stop_timeout: float = 10.0
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    log_level: str = "info"
    log_format: str = "text"


def _url(text: str) -> str:
    text = text.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError("a tophosts server's base URL such as http://tophosts:8080")
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ValueError(
            "a URL with a port from 0 to 65535, such as http://tophosts:8080"
        ) from None
    return text.rstrip("/")


def _format(text: str) -> str:
    if text.strip() not in LOG_FILE_FORMATS:
        raise ValueError("one of " + ", ".join(LOG_FILE_FORMATS))
    return text.strip()


def _token(path: str) -> str:
    # The file may hold several tokens (the server's rotation form): send the first.
    return config._token_file(path).split(",")[0]


_Spec = config._Spec

SPECS: tuple[config._Spec, ...] = (
    _Spec("format", _format, "the log line format: " + ", ".join(LOG_FILE_FORMATS), "FMT"),
    _Spec("url", _url, "the tophosts server to send counts to", "URL"),
    _Spec("ingest_token_file", _token, "file holding the server's ingest token", "PATH"),
    _Spec("state", config._path, "state file: what was shipped, for restarts", "PATH"),
    _Spec(
        "from_start",
        config._boolean,
        "read files the state does not know from their start, not their end",
        "",
        switch=True,
    ),
    _Spec("interval", config._seconds(0.01, 3600), "seconds between batches", "S"),
    _Spec("max_batch", config._integer(1, 100_000), "(second, host) events per batch at most", "N"),
    _Spec("timeout", config._seconds(0.1, 600), "seconds to wait for the server's answer", "S"),
    _Spec(
        "rotate_wait",
        config._seconds(0, 86400),
        "seconds a rotated or deleted file must stay idle before it is closed",
        "S",
    ),
    _Spec(
        "stop_timeout",
        config._seconds(0, 3600),
        "seconds SIGTERM waits for the server to acknowledge what was read",
        "S",
    ),
    _Spec(
        "metrics_port", config._integer(0, 65535), "serve Prometheus metrics on this port", "PORT"
    ),
    _Spec("metrics_host", config._nonempty, "address the metrics are served on", "ADDR"),
    _Spec(
        "log_level",
        config._choice(*config.LOG_LEVELS),
        "one of " + ", ".join(config.LOG_LEVELS),
        "LEVEL",
    ),
    _Spec(
        "log_format",
        config._choice("text", "json"),
        "text, or json for one JSON object a line",
        "FMT",
    ),
)


class SettingsError(ValueError):
    pass


def variable(spec: config._Spec) -> str:
    return ENV_PREFIX + spec.name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="log files or globs to follow (quote globs)"
    )
    defaults = TailSettings()
    for spec in SPECS:
        default = getattr(defaults, spec.name.removesuffix("_file"), None)
        help = f"{spec.help} (env {variable(spec)}"
        if spec.switch:
            parser.add_argument(
                config.flag(spec.name), dest=spec.name, action="store_const", const="true",
                help=help + ")",
            )  # fmt: skip
            continue
        shown = f", default {default}" if default not in (None, "", False) else ""
        parser.add_argument(
            config.flag(spec.name),
            dest=spec.name,
            metavar=spec.metavar,
            default=None,
            help=help + shown + ")",
        )


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> TailSettings:
    values: dict[str, Any] = {"paths": tuple(args.paths)}
    for spec in SPECS:
        raw = getattr(args, spec.name, None)
        source = config.flag(spec.name)
        if raw is None and variable(spec) in environ:
            raw, source = environ[variable(spec)], variable(spec)
        if raw is None:
            continue
        try:
            value = spec.parse(raw)
        except ValueError as exc:
            shown = "a value not shown here" if "token" in spec.name else repr(raw)
            raise SettingsError(f"{source}: expected {exc}, got {shown}") from None
        values[spec.name.removesuffix("_file")] = value
    if "format" not in values:
        raise SettingsError(
            f"--format (or {ENV_PREFIX}FORMAT) is required: one of " + ", ".join(LOG_FILE_FORMATS)
        )
    bad = [p for p in values["paths"] if not p.strip() or re.search(r"[\x00\n]", p)]
    if bad:
        raise SettingsError(f"not a path or glob: {bad[0]!r}")
    return TailSettings(**values)
