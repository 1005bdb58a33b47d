"""The tophosts ASGI application: the guard, then the fast lane, then Starlette.

Every route comes from the table in :mod:`tophosts.routes`. Ingest (and plain
``/stats`` queries on a store that answers synchronously) run in the fast
lane, as plain ASGI; the rest is a small Starlette app behind it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from time import perf_counter

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.routing import Route as StarletteRoute
from starlette.staticfiles import StaticFiles

from tophosts import background, logs, openapi, routes, snapshot
from tophosts.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    content_length,
    error_of,
    send_json,
)
from tophosts.auth import Tokens, parse_tokens
from tophosts.config import Settings, SettingsError
from tophosts.events import Decoder
from tophosts.ingest import Ingest
from tophosts.metrics import Metrics
from tophosts.responses import RETRY_AFTER, error, json_response, unavailable
from tophosts.stats import Stats
from tophosts.store import Clock, Store, StoreUnavailable, open_store

log = logging.getLogger("tophosts")

FREEZE_EVERY = 1.0
"""Seconds between two looks for windows to freeze (history)."""
_REFUSAL_KEPT = 4096
"""Bytes of a refusal's body kept, to read its reason for the access log."""

# Pages load their script and style from files only, so no inline script can run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


class TopHosts:
    """The tophosts ASGI application."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics(store.kind)
        self._spec = openapi.spec(routes.paths())
        tokens = {
            "ingest": (settings.ingest_token, "ingest"),
            "read": (settings.read_token, "reading stats and metrics"),
        }
        self.guards: dict[str, Tokens] = {}
        for guard, (configured, what) in tokens.items():
            if configured:
                allowed = Tokens(parse_tokens(configured), what)
                self.guards |= dict.fromkeys(routes.guarded(guard), allowed)  # type: ignore[arg-type]
        decoder = Decoder(settings.max_hosts)
        self.counter = Ingest(store, decoder, settings.max_body, False, self.metrics)
        self.counters = Ingest(store, decoder, settings.max_body, True, self.metrics)
        self._stats = Stats(store, clock, settings.top, self.metrics, settings.history_top)
        self.stats = self._stats.endpoint
        self.stats_history = self._stats.history
        # The fast lane: (method, path) -> a plain ASGI app, served before Starlette.
        self.fast: dict[tuple[str, str], ASGIApp] = {}
        table: list[BaseRoute] = []
        for route in routes.ROUTES:
            endpoint = getattr(self, route.endpoint)
            if route.fast:
                self.fast[(route.method, route.path)] = endpoint.handle
            table.append(StarletteRoute(route.path, endpoint, methods=[route.method]))
        table.extend(
            Mount(static.path, app=StaticFiles(directory=static.directory), name=static.name)
            for static in routes.STATIC
        )
        self.router = Starlette(
            routes=table,
            exception_handlers={
                HTTPException: self.http_error,
                Exception: self.server_error,
            },
            lifespan=self.lifespan,
        )
        # POST /counter/ is a 404 like any unknown path, not a redirect whose
        # Location is built from the client's Host header.
        self.router.router.redirect_slashes = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.router(scope, receive, send)
        if self.guards:
            tokens = self.guards.get(scope["path"])
            if tokens is not None and not tokens.allows(scope):
                return await self.observed(scope, receive, send, tokens.refuse)
        fast = self.fast.get((scope["method"], scope["path"]))
        if fast is not None:
            return await fast(scope, receive, send)
        if scope["path"] == "/stats" and scope["method"] == "GET":
            query = self._stats.plain(scope["query_string"])
            if query is not None:
                return await self._stats.fast(scope, send, *query)
        await self.observed(scope, receive, send)

    async def observed(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp | None = None
    ) -> None:
        """Serve through Starlette (or ``app``), counting and logging like the fast lane;
        a refusal's line carries the ``error`` of its body."""
        started = perf_counter()
        status, sent = 500, 0
        refusal = b""

        async def watch(message: Message) -> None:
            nonlocal status, sent, refusal
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                if status >= 400 and len(refusal) < _REFUSAL_KEPT:
                    refusal += body
            await send(message)

        try:
            await (app or self.router)(scope, receive, watch)
        finally:
            seconds = perf_counter() - started
            path = scope["path"]
            self.metrics.request(routes.label(path), status, seconds)
            if logs.wanted(status):
                error = error_of(refusal) if refusal else None
                size = content_length(scope)
                logs.request(scope["method"], path, status, seconds, size, sent, error)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Last at shutdown: the access lines, after the final summary of the requests.
            stack.callback(logs.flush)
            if not logs.every and logs.access.isEnabledFor(logging.INFO):
                summary = logs.Summary(self.metrics.requests.figures.counts)
                await stack.enter_async_context(background.every(logs.SUMMARY_SECONDS, summary))
            stack.push_async_callback(self.store.close)
            await stack.enter_async_context(self.metrics.flushing())
            snapshots = self.store.snapshots
            if self.settings.snapshot and snapshots is not None:
                path, interval = Path(self.settings.snapshot), self.settings.snapshot_interval
                await stack.enter_async_context(snapshot.periodic(snapshots, path, interval))
            if self.store.history is not None:
                # Entered after the snapshots, so it stops before the last one is written.
                await stack.enter_async_context(background.every(FREEZE_EVERY, self.freeze, False))
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

    async def freeze(self) -> None:
        """Freeze the windows that are due (history), in the background."""
        history = self.store.history
        assert history is not None
        try:
            await history.freeze()
        except Exception:  # a bug; the next run tries again
            log.exception("freezing closed windows failed")

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
        """The answer to a request over --limit-concurrency (:mod:`tophosts.server.protocol`)."""
        await self.observed(scope, receive, send, _overloaded)

    async def openapi(self, request: Request) -> Response:
        return json_response(200, self._spec)

    async def docs(self, request: Request) -> Response:
        return FileResponse(routes.DOCS / "index.html", headers=PAGE_HEADERS)

    async def dashboard(self, request: Request) -> Response:
        return FileResponse(routes.DASHBOARD / "index.html", headers=PAGE_HEADERS)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        method, path = request.method, request.url.path
        if exc.status_code == 404:
            return error(404, f"no route {path}; the routes are {routes.listing()}")
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


def _shifted(clock: Clock, offset: float) -> Clock:
    return lambda: clock() + offset


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    clock: Clock = time.time,
    metrics: Metrics | None = None,
) -> TopHosts:
    """Build the app; ``clock`` is only used when the store is opened here, and
    ``metrics`` (say a :class:`tophosts.metrics.NullMetrics`) replaces the default."""
    settings = settings or Settings()
    if settings.clock_offset:
        clock = _shifted(clock, settings.clock_offset)
    if store is None:
        store = open_store(
            settings.store,
            clock=clock,
            max_skew=settings.max_skew,
            max_tracked_hosts=settings.max_tracked_hosts,
            idempotency_ttl=settings.idempotency_ttl,
            max_idempotency_keys=settings.max_idempotency_keys,
            retention=settings.retention,
            history_top=settings.history_top,
            redis_prefix=settings.redis_prefix,
            redis_timeout=settings.redis_timeout,
            body_timeout=settings.body_timeout,
        )
    if settings.snapshot:
        snapshots = store.snapshots
        if snapshots is None:
            raise SettingsError(
                "--snapshot keeps the memory store across restarts; "
                f"the {store.kind} store keeps its own data, so drop --snapshot"
            )
        snapshot.restore(snapshots, Path(settings.snapshot), settings.snapshot_ignore_corrupt)
    return TopHosts(settings, store, clock, metrics)
