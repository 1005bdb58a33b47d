"""Settings from command-line flags and ``TOPHOSTS_*`` environment variables.

Every setting has a flag (``--max-skew``) and a variable (``TOPHOSTS_MAX_SKEW``).
A flag wins over its variable, and the variable over the default. A bad value
raises :class:`SettingsError` with one line that names the flag or variable,
the value, and what is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tophosts.logs import ACCESS_LOGS
from tophosts.windows import duration

ENV_PREFIX = "TOPHOSTS_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(ValueError):
    """A setting with a value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    store: str = "memory"
    top: int = 10
    max_skew: int = 300
    max_body: int = 8 * 1024 * 1024
    max_hosts: int = 10_000
    log_level: str = "info"
    log_format: str = "text"
    access_log: str = "refused"
    snapshot: str = ""
    snapshot_interval: float = 10.0
    snapshot_ignore_corrupt: bool = False
    limit_concurrency: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    timeout_keep_alive: int = 5
    max_tracked_hosts: int = 1_000_000
    idempotency_ttl: int | None = None
    """Seconds an Idempotency-Key is kept; None: 2 h plus --max-skew."""
    max_idempotency_keys: int = 1_000_000
    clock_offset: float = 0.0
    history_top: int = 100
    retention: int = 86400
    ingest_token: str = dataclasses.field(default="", repr=False)
    read_token: str = dataclasses.field(default="", repr=False)
    redis_prefix: str = "tophosts"
    redis_timeout: float = 1.0
    workers: int = 1
    syslog: str = ""
    """Syslog listeners, comma-separated URLs (``udp://HOST:PORT``, ``tcp://HOST:PORT``)."""
    syslog_format: str = "auto"
    syslog_rcvbuf: int = 8 * 1024 * 1024
    syslog_idle_timeout: float = 600.0

    def environ(self) -> dict[str, str]:
        """These settings as ``TOPHOSTS_*`` variables, e.g. to hand to worker processes."""
        shown = {spec.name: spec.show for spec in SPECS}
        return {
            ENV_PREFIX + f.name.upper(): shown.get(f.name, str)(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) not in ("", None)
        }


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        text = text.strip()
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return int(text)

    return parse


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2}
_SIZE_UNITS |= {"mb": 1000**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def _size(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or not unit or not 1 <= int(match.group(1)) * unit <= 2**40:
        raise ValueError("a size in bytes such as 8388608, 512KiB or 8MiB, from 1 B to 1 TiB")
    return int(match.group(1)) * unit


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip().lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return text.strip().lower()

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _boolean(text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise ValueError("a boolean: " + ", ".join(_TRUE) + " or " + ", ".join(_FALSE[:-1]))


def _path(text: str) -> str:
    return text.strip()


def _tokens(text: str) -> str:
    tokens = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    if not tokens or any(len(t) < 16 or not t.isascii() or " " in t for t in tokens):
        raise ValueError("tokens of at least 16 ASCII characters without spaces, comma-separated")
    return ",".join(tokens)


def _token_file(path: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"a readable file ({exc.strerror})") from None
    return _tokens(text)


def _store_url(text: str) -> str:
    text = text.strip()
    if text in ("memory", "memory://"):
        return "memory"
    if re.match(r"(redis|rediss|unix)://", text):
        from redis.asyncio.connection import parse_url

        try:
            parse_url(text)
        except ValueError as exc:
            raise ValueError(
                f"a valid Redis URL such as redis://localhost:6379/0 ({exc})"
            ) from None
        return text
    raise ValueError("'memory', or a Redis URL such as redis://localhost:6379/0")


def _syslog_urls(text: str) -> str:
    from tophosts.syslog.address import parse_all

    return ",".join(map(str, parse_all(text)))


def _syslog_format(text: str) -> str:
    from tophosts.syslog.lines import FORMAT_NAMES

    return _choice(*FORMAT_NAMES)(text)


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        text = text.strip()
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text) or not low <= float(text) <= high:
            raise ValueError(f"a number of seconds from {low:g} to {high:g}, such as 1 or 0.25")
        return float(text)

    return parse


_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_RETENTION = 7 * 86400


def _retention(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+)\s*([mhd]?)\s*", text.lower())
    seconds = int(match[1]) * _DURATION_UNITS.get(match[2], 0) if match else -1
    if match and match[1].strip("0") == "":
        return 0
    if not match or not 60 <= seconds <= MAX_RETENTION:
        raise ValueError(
            "0 (no history), or a duration from 1m to 7d in minutes, hours or days, "
            "such as 90m, 24h or 7d"
        )
    return seconds


def _key_prefix(text: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]{1,64}", text.strip()):
        raise ValueError("1 to 64 printable ASCII characters without spaces, such as tophosts")
    return text.strip()


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("a non-empty value")
    return text.strip()


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    switch: bool = False
    """A flag that takes no value (``--snapshot-ignore-corrupt``)."""
    show: Callable[[Any], str] = str
    """How the default is written in ``--help``."""
    repeat: bool = False
    """A flag that may be given several times; the values are joined with commas."""


SPECS: tuple[_Spec, ...] = (
    _Spec("host", _nonempty, "address to bind", "ADDR"),
    _Spec("port", _integer(0, 65535), "TCP port to listen on (0 picks a free one)", "PORT"),
    _Spec("store", _store_url, "'memory', or redis://host:port/db to share counts", "URL"),
    _Spec("top", _integer(1, 1000), "hosts in /stats when no limit is given", "N"),
    _Spec("max_skew", _integer(0, 86400), "seconds an event may be ahead of the clock", "S"),
    _Spec("max_body", _size, "largest request body, e.g. 8MiB", "SIZE"),
    _Spec("max_hosts", _integer(1, 1_000_000), "most hosts in one event", "N"),
    _Spec("log_level", _choice(*LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS), "LEVEL"),
    _Spec(
        "limit_concurrency",
        _integer(0, 1_000_000),
        "requests served at once; more get 503 with Retry-After (0: no limit)",
        "N",
    ),
    _Spec(
        "header_timeout", _seconds(0.1, 3600), "seconds a request may take to send its headers", "S"
    ),
    _Spec("body_timeout", _seconds(0.1, 3600), "seconds a request may take to send its body", "S"),
    _Spec("timeout_keep_alive", _integer(1, 3600), "seconds an idle connection is kept", "S"),
    _Spec(
        "max_tracked_hosts",
        _integer(1, 100_000_000),
        "distinct hosts per window; events adding more get 429",
        "N",
    ),
    _Spec(
        "idempotency_ttl",
        _integer(1, 30 * 86400),
        "seconds an Idempotency-Key is kept (default: 7200 plus --max-skew)",
        "S",
    ),
    _Spec(
        "max_idempotency_keys",
        _integer(1, 100_000_000),
        "Idempotency-Keys kept at once; a request with a new one gets 429 beyond",
        "N",
    ),
    _Spec(
        "clock_offset",
        _seconds(-(10**9), 10**9),
        "shift the server clock by S seconds, for drills and tests only",
        "S",
    ),
    _Spec(
        "history_top",
        _integer(1, 1000),
        "hosts kept of each window for history (?at= and /stats/history)",
        "N",
    ),
    _Spec(
        "retention",
        _retention,
        "how long closed windows are kept for history, e.g. 90m, 24h, 7d; 0 turns it off",
        "DURATION",
        show=duration,
    ),
    _Spec("log_format", _choice("text", "json"), "text, or json for one JSON object a line", "FMT"),
    _Spec(
        "access_log",
        _choice(*ACCESS_LOGS),
        "at info: refused (a line per 4xx/5xx, a summary of the rest every 10 s) or all",
        "WHICH",
    ),
    _Spec("snapshot", _path, "file to keep the memory store in across restarts", "PATH"),
    _Spec("snapshot_interval", _seconds(0.1, 86400), "seconds between snapshots", "S"),
    _Spec(
        "ingest_token", _tokens, "bearer token(s) POST /counter(s) require, comma-separated", "T"
    ),
    _Spec("ingest_token_file", _token_file, "read the ingest token(s) from this file", "PATH"),
    _Spec("read_token", _tokens, "bearer token(s) /stats and /metrics require", "T"),
    _Spec("read_token_file", _token_file, "read the read token(s) from this file", "PATH"),
    _Spec(
        "snapshot_ignore_corrupt",
        _boolean,
        "start empty, with a warning, if the snapshot is unreadable",
        "",
        switch=True,
    ),
    _Spec("redis_prefix", _key_prefix, "first part of every Redis key", "PREFIX"),
    _Spec("redis_timeout", _seconds(0.01, 60), "seconds to wait for Redis before a 503", "S"),
    _Spec("workers", _integer(1, 64), "worker processes; more than 1 needs a redis:// store", "N"),
    _Spec(
        "syslog",
        _syslog_urls,
        "receive access-log lines over syslog at udp://HOST:PORT or tcp://HOST:PORT; repeatable",
        "URL",
        repeat=True,
    ),
    _Spec(
        "syslog_format",
        _syslog_format,
        "auto (by syslog tag, then by body), nginx, haproxy, apache, text or caddy",
        "FMT",
    ),
    _Spec("syslog_rcvbuf", _size, "receive buffer to ask for, per UDP listener", "SIZE"),
    _Spec(
        "syslog_idle_timeout",
        _seconds(0.1, 86400),
        "seconds before an idle TCP syslog connection is closed",
        "S",
    ),
)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; values are parsed later by :func:`resolve`."""
    defaults = Settings()
    for spec in SPECS:
        help = f"{spec.help} (env {ENV_PREFIX}{spec.name.upper()}"
        if spec.switch:
            parser.add_argument(
                flag(spec.name), dest=spec.name, action="store_const", const="true", help=help + ")"
            )
            continue
        default = getattr(defaults, spec.name, "")
        parser.add_argument(
            flag(spec.name),
            dest=spec.name,
            metavar=spec.metavar,
            default=None,
            help=help + (f", default {spec.show(default)})" if default not in ("", None) else ")"),
            action="append" if spec.repeat else "store",
        )


def resolve(args: argparse.Namespace | None, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags, then the environment, then the defaults.

    A token and its file form (``--ingest-token`` and ``--ingest-token-file``)
    fill one setting: any flag beats any variable, and two of one kind that
    both give it are an error rather than a silent choice.
    """
    # target setting -> (source, raw value, spec) of each flag, then of each variable
    given: dict[str, tuple[list[tuple[str, str, _Spec]], list[tuple[str, str, _Spec]]]] = {}
    for spec in SPECS:
        flags, variables = given.setdefault(spec.name.removesuffix("_file"), ([], []))
        raw = getattr(args, spec.name, None) if args is not None else None
        if raw is not None:
            flags.append((flag(spec.name), raw, spec))
        var = ENV_PREFIX + spec.name.upper()
        if var in environ:
            variables.append((var, environ[var], spec))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (flags, variables) in given.items():
        chosen = flags or variables
        if not chosen:
            continue
        if len(chosen) > 1:
            both = " and ".join(source for source, _, _ in chosen)
            raise SettingsError(f"{both} both set {flag(name)}; give only one of them")
        source, raw, spec = chosen[0]
        if isinstance(raw, list):  # a repeated flag
            raw = ",".join(raw)
        try:
            value = spec.parse(raw)
        except ValueError as exc:
            secret = spec.name.endswith("token")
            got = "a value not shown here" if secret else repr(raw)
            raise SettingsError(f"{source}: expected {exc}, got {got}") from None
        values[name] = value
        sources[name] = source
    settings = Settings(**values)
    if settings.workers > 1 and settings.store == "memory":
        raise SettingsError(
            f"{sources['workers']}: {settings.workers} workers need a shared store, but the "
            "memory store lives inside each process, so each worker would hold different "
            "counts; use --store redis://host:port/db (or run one worker)"
        )
    return settings


def load(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parse ``argv`` (flags only) against ``environ``: the whole path, for tests."""
    parser = argparse.ArgumentParser(prog="tophosts serve")
    add_arguments(parser)
    return resolve(parser.parse_args(list(argv)), environ)
