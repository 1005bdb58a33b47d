"""The HTTP routes. Ingest runs in the fast lane (:mod:`tophosts.ingest`); the
rest is a small Starlette app behind it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tophosts import logs, openapi, snapshot
from tophosts.auth import Tokens, parse_tokens
from tophosts.config import Settings, SettingsError
from tophosts.events import Decoder
from tophosts.ingest import RETRY_AFTER, Ingest, Message, Receive, Scope, Send, send_json
from tophosts.metrics import Metrics, route_of
from tophosts.store import Clock, Store, StoreUnavailable, open_store
from tophosts.store.memory import MemoryStore
from tophosts.windows import Window, past

log = logging.getLogger("tophosts")

MAX_LIMIT = openapi.MAX_LIMIT
DOCS = Path(__file__).parent / "docs"
DASHBOARD = Path(__file__).parent / "dashboard"
# Pages load their script and style from files only, so no inline script can run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}
STATS_PARAMS = ("stats_type", "limit")
INGEST_PATHS = ("/counter", "/counters")
READ_PATHS = ("/stats", "/metrics")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(payload), status, headers, "application/json")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


class TopHosts:
    """The tophosts ASGI application."""

    def __init__(self, settings: Settings, store: Store, clock: Clock = time.time) -> None:
        self.settings = settings
        self.store = store
        # The memory store answers synchronously: GET /stats may skip Starlette.
        self.top_now: Callable[[Window, int], list[tuple[str, int]]] | None = (
            store.top_now if isinstance(store, MemoryStore) else None
        )
        self.clock = clock
        self.metrics = Metrics(store.kind)
        self._spec = openapi.spec()
        self.guards: dict[str, Tokens] = {}
        if settings.ingest_token:
            ingest = Tokens(parse_tokens(settings.ingest_token), "ingest")
            self.guards |= dict.fromkeys(INGEST_PATHS, ingest)
        if settings.read_token:
            read = Tokens(parse_tokens(settings.read_token), "reading stats and metrics")
            self.guards |= dict.fromkeys(READ_PATHS, read)
        decoder = Decoder(settings.max_hosts)
        self.counter = Ingest(store, decoder, settings.max_body, False, self.metrics)
        self.counters = Ingest(store, decoder, settings.max_body, True, self.metrics)
        self.router = Starlette(
            routes=[
                Route("/counter", self.counter, methods=["POST"]),
                Route("/counters", self.counters, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/docs", self.docs, methods=["GET"]),
                Mount("/docs/assets", StaticFiles(directory=DOCS), name="docs"),
                Route("/", self.dashboard, methods=["GET"]),
                Mount("/dashboard/assets", StaticFiles(directory=DASHBOARD), name="dashboard"),
            ],
            exception_handlers={
                HTTPException: self.http_error,
                Exception: self.server_error,
            },
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.guards and scope["type"] == "http":
            tokens = self.guards.get(scope["path"])
            if tokens is not None and not tokens.allows(scope):
                return await self.observed(scope, receive, send, tokens.refuse)
        # The fast lane: the ingest routes skip Starlette's routing and middleware.
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/counter":
                return await self.counter.handle(scope, receive, send)
            if path == "/counters":
                return await self.counters.handle(scope, receive, send)
        if scope["type"] != "http":
            return await self.router(scope, receive, send)
        if scope["path"] == "/stats" and scope["method"] == "GET" and self.top_now is not None:
            query = simple_stats_query(scope["query_string"])
            if query is not None:
                return await self.fast_stats(scope, send, *query)
        await self.observed(scope, receive, send)

    async def fast_stats(self, scope: Scope, send: Send, window: Window, limit: int | None) -> None:
        """``GET /stats`` with a plain, valid query on the memory store, without Starlette.

        Polled in a loop beside ingest, the Starlette route cost about four
        ingest requests per query; this answers exactly as :meth:`stats` does
        (body, X-Window-* headers, metrics, access log) for the queries that
        :func:`simple_stats_query` reads, and leaves every other one to it.
        """
        assert self.top_now is not None
        started = perf_counter()
        span = past(self.clock(), window)
        top = self.top_now(window, limit or self.settings.top)
        body = msgspec.json.encode({"top_hosts": dict(top)})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"x-window-start", str(span.start).encode()),
                    (b"x-window-end", str(span.end).encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        seconds = perf_counter() - started
        self.metrics.request("/stats", 200, seconds)
        if logs.access.isEnabledFor(logging.INFO):
            logs.request("GET", "/stats", 200, seconds, _content_length(scope), len(body))

    async def observed(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp | None = None
    ) -> None:
        """Serve through Starlette (or ``app``), counting and logging like the fast lane."""
        started = perf_counter()
        status, sent = 500, 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await (app or self.router)(scope, receive, watch)
        finally:
            seconds = perf_counter() - started
            path = scope["path"]
            self.metrics.request(route_of(path), status, seconds)
            if logs.access.isEnabledFor(logging.INFO):
                received = _content_length(scope)
                logs.request(scope["method"], path, status, seconds, received, sent)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.store.close)
            await stack.enter_async_context(self.metrics.flushing())
            if self.settings.snapshot:
                assert isinstance(self.store, MemoryStore)
                path, interval = Path(self.settings.snapshot), self.settings.snapshot_interval
                await stack.enter_async_context(snapshot.periodic(self.store, path, interval))
            try:
                await self.store.ping()
            except StoreUnavailable as exc:
                # Start anyway: requests get 503 until the store is back.
                log.warning("%s; answering 503 until it is back", exc)
            if self.settings.syslog:
                # Entered last, so it exits first: the receiver stops and flushes
                # before the final snapshot and before the store closes.
                from tophosts.syslog.receiver import Receiver

                receiver = Receiver.for_settings(
                    self.settings, self.store, self.clock, self.metrics
                )
                await stack.enter_async_context(receiver)
            yield

    async def stats(self, request: Request) -> Response:
        seen: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in STATS_PARAMS:
                return error(
                    400,
                    f"unknown query parameter {name!r}; /stats accepts "
                    "stats_type=minute|hour and limit=1..1000",
                )
            if name in seen:
                return error(400, f"query parameter {name!r} is given more than once")
            seen[name] = value
        label = seen.get("stats_type", "minute")
        try:
            window = Window.from_label(label) if label.islower() else None
        except KeyError:
            window = None
        if window is None:
            return error(400, f"stats_type must be 'minute' or 'hour', got {label!r}")
        raw_limit = seen.get("limit")
        limit = self.settings.top
        if raw_limit is not None:
            if not (raw_limit.isascii() and raw_limit.isdigit()) or not (
                1 <= int(raw_limit) <= MAX_LIMIT
            ):
                return error(
                    400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}"
                )
            limit = int(raw_limit)
        # The window in headers, so the body stays exactly {"top_hosts": ...} and a
        # client (the dashboard) can label it with the server's clock, not its own.
        span = past(self.clock(), window)
        try:
            top = await self.store.top(window, limit)
        except StoreUnavailable as exc:
            return unavailable(exc)
        headers = {"X-Window-Start": str(span.start), "X-Window-End": str(span.end)}
        return json_response(200, {"top_hosts": dict(top)}, headers)

    async def healthz(self, request: Request) -> Response:
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            return unavailable(exc)
        return json_response(200, {"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        # The counters are worth scraping even when the store is down; the
        # size gauges then keep their last value.
        with contextlib.suppress(StoreUnavailable):
            self.metrics.set_sizes(await self.store.sizes())
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return Response(body, 200, headers={"content-type": content_type})

    async def shed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The answer to a request over --limit-concurrency (see :mod:`tophosts.protocol`)."""
        await self.observed(scope, receive, send, _overloaded)

    async def openapi(self, request: Request) -> Response:
        return json_response(200, self._spec)

    async def docs(self, request: Request) -> Response:
        return FileResponse(DOCS / "index.html", headers=PAGE_HEADERS)

    async def dashboard(self, request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html", headers=PAGE_HEADERS)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        method, path = request.method, request.url.path
        if exc.status_code == 404:
            return error(404, f"no route {path}; the routes are " + ", ".join(ROUTES))
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            return error(
                405,
                f"method {method} is not allowed on {path}; use {allow.replace(', ', ' or ')}",
                {"Allow": allow},
            )
        return error(exc.status_code, str(exc.detail), exc.headers)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        return error(500, "internal server error")


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(
        send,
        503,
        {"error": "the server is at --limit-concurrency; nothing was applied, retry shortly"},
        [(b"retry-after", RETRY_AFTER.encode())],
    )


_WINDOWS = {b"minute": Window.MINUTE, b"hour": Window.HOUR}


def simple_stats_query(query: bytes) -> tuple[Window, int | None] | None:
    """``(window, limit)`` of a plain valid /stats query string, else None.

    Plain: only ``stats_type=minute|hour`` and ``limit=<1..1000>``, each at most
    once, spelled without escapes. None sends the request down the Starlette
    route, which gives every other query (and every error) its answer.
    """
    window: Window | None = None
    limit: int | None = None
    if not query:
        return Window.MINUTE, None
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"stats_type" and window is None and value in _WINDOWS:
            window = _WINDOWS[value]
        elif (
            name == b"limit"
            and limit is None
            and value.isdigit()
            and len(value) <= 4
            and 1 <= int(value) <= MAX_LIMIT
        ):
            limit = int(value)
        else:
            return None
    return window or Window.MINUTE, limit


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


ROUTES = tuple(
    f"{method.upper()} {path}" for path, item in openapi.PATHS.items() for method in item
)


def unavailable(exc: StoreUnavailable) -> Response:
    return error(503, f"the store is unavailable: {exc}", {"Retry-After": RETRY_AFTER})


def _shifted(clock: Clock, offset: float) -> Clock:
    return lambda: clock() + offset


def create_app(
    settings: Settings | None = None, store: Store | None = None, clock: Clock = time.time
) -> TopHosts:
    """Build the app; ``clock`` is only used when the store is opened here."""
    settings = settings or Settings()
    if settings.clock_offset:
        clock = _shifted(clock, settings.clock_offset)
    if store is None:
        store = open_store(
            settings.store,
            clock=clock,
            max_skew=settings.max_skew,
            max_tracked_hosts=settings.max_tracked_hosts,
            redis_prefix=settings.redis_prefix,
            redis_timeout=settings.redis_timeout,
        )
    if settings.snapshot:
        if not isinstance(store, MemoryStore):
            raise SettingsError(
                "--snapshot keeps the memory store across restarts; "
                f"the {store.kind} store keeps its own data, so drop --snapshot"
            )
        snapshot.restore(store, Path(settings.snapshot), settings.snapshot_ignore_corrupt)
    return TopHosts(settings, store, clock)
