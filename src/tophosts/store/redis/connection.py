"""The connection to Redis: a pool and the scripts per event loop, and every
failure mapped to :class:`~tophosts.store.StoreUnavailable`."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.maint_notifications import MaintNotificationsConfig

from tophosts.store import StoreUnavailable

_POOL_SIZE = 32
_SCRIPTS = resources.files(__package__) / "scripts"


def script(name: str) -> str:
    """The Lua source of ``scripts/<name>.lua``."""
    return (_SCRIPTS / f"{name}.lua").read_text()


# The two ingest scripts start with the same preamble (check_keys.lua).
SOURCES = {
    "add": script("check_keys") + script("add"),
    "add_carefully": script("check_keys") + script("add_carefully"),
    "top": script("top"),
    "settle": script("settle"),
    "sweep": script("sweep"),
    "claim": script("claim"),
    "release": script("release"),
}


class Link(NamedTuple):
    """The client of one event loop, and the scripts registered on it."""

    loop: asyncio.AbstractEventLoop
    pool: BlockingConnectionPool
    client: aioredis.Redis
    add: AsyncScript
    add_carefully: AsyncScript
    top: AsyncScript
    settle: AsyncScript
    sweep: AsyncScript
    claim: AsyncScript
    release: AsyncScript


def open_link(url: str, timeout: float) -> Link:
    """A new pool and client for the running event loop."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=_POOL_SIZE,
        timeout=timeout,
        socket_connect_timeout=timeout,
        # Every call is bounded by call() instead: one timer, not two.
        socket_timeout=None,
        # A retry could apply an event twice; the caller retries on 503.
        retry=Retry(NoBackoff(), 0),
        # Enabled (or "auto", redis-py's default), these make the pool
        # skip its check that a connection was not closed by Redis.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    client = aioredis.Redis.from_pool(pool)
    scripts = {name: client.register_script(source) for name, source in SOURCES.items()}
    return Link(asyncio.get_running_loop(), pool, client, **scripts)


class Failures:
    """Turns what redis-py raises into :class:`StoreUnavailable`, naming the server."""

    def __init__(self, url: str, timeout: float) -> None:
        self.where = describe(url)
        self.timeout = timeout

    async def call(self, call: Any, wait: float | None = None) -> Any:
        """Await a Redis call within the timeout, mapping every failure to StoreUnavailable."""
        wait = self.timeout if wait is None else wait
        try:
            async with asyncio.timeout(wait):
                return await call
        except (TimeoutError, rex.RedisError, OSError) as exc:
            raise self.unavailable(exc, wait) from None

    def unavailable(self, exc: BaseException, wait: float) -> StoreUnavailable:
        if isinstance(exc, rex.BusyLoadingError):
            return StoreUnavailable(
                f"Redis at {self.where} is loading its data into memory (after a restart) "
                "and answers nothing else until it is done"
            )
        if isinstance(exc, TimeoutError | rex.TimeoutError):
            return StoreUnavailable(f"Redis at {self.where} did not answer within {wait:.3g} s")
        if isinstance(exc, rex.ConnectionError | OSError):
            return StoreUnavailable(f"cannot reach Redis at {self.where}: {exc}")
        return StoreUnavailable(f"Redis at {self.where} failed: {exc}")


async def evalsha(
    connection: AbstractConnection, script: AsyncScript, args: list[Any], keys: int
) -> Any:
    """EVALSHA on ``connection``, loading the script first if Redis does not have it
    (after a restart, say): NOSCRIPT means nothing ran."""
    try:
        await connection.send_command("EVALSHA", script.sha, keys, *args)
        return await connection.read_response()
    except rex.NoScriptError:
        await connection.send_command("SCRIPT", "LOAD", script.script)
        await connection.read_response()
        await connection.send_command("EVALSHA", script.sha, keys, *args)
        return await connection.read_response()


def describe(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    kwargs: dict[str, Any] = dict(parse_url(url))
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    scheme = url.split("://", 1)[0]
    host = kwargs.get("host", "localhost")
    port = kwargs.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"
