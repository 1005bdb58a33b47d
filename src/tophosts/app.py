"""The HTTP routes. Ingest runs in the fast lane (:mod:`tophosts.ingest`); the
rest is a small Starlette app behind it."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tophosts import config
from tophosts.config import Settings
from tophosts.events import Decoder
from tophosts.ingest import RETRY_AFTER, Ingest, Receive, Scope, Send
from tophosts.store import Clock, Store, StoreUnavailable, open_store
from tophosts.windows import Window

log = logging.getLogger("tophosts")

MAX_LIMIT = 1000
STATS_PARAMS = ("stats_type", "limit")


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(payload), status, headers, "application/json")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


class TopHosts:
    """The tophosts ASGI application."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        decoder = Decoder(settings.max_hosts)
        self.counter = Ingest(store, decoder, settings.max_body, batch=False)
        self.counters = Ingest(store, decoder, settings.max_body, batch=True)
        self.router = Starlette(
            routes=[
                Route("/counter", self.counter, methods=["POST"]),
                Route("/counters", self.counters, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
            ],
            exception_handlers={
                HTTPException: self.http_error,
                Exception: self.server_error,
            },
            lifespan=self.lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The fast lane: the ingest routes skip Starlette's routing and middleware.
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/counter":
                return await self.counter(scope, receive, send)
            if path == "/counters":
                return await self.counters(scope, receive, send)
        await self.router(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            # Start anyway: requests get 503 until the store is back.
            log.warning("%s; answering 503 until it is back", exc)
        try:
            yield
        finally:
            await self.store.close()

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
        try:
            top = await self.store.top(window, limit)
        except StoreUnavailable as exc:
            return unavailable(exc)
        return json_response(200, {"top_hosts": dict(top)})

    async def healthz(self, request: Request) -> Response:
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            return unavailable(exc)
        return json_response(200, {"status": "ok"})

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


ROUTES = ("POST /counter", "POST /counters", "GET /stats", "GET /healthz")


def unavailable(exc: StoreUnavailable) -> Response:
    return error(503, f"the store is unavailable: {exc}", {"Retry-After": RETRY_AFTER})


def create_app(
    settings: Settings | None = None, store: Store | None = None, clock: Clock = time.time
) -> TopHosts:
    """Build the app; ``clock`` is only used when the store is opened here."""
    settings = settings or Settings()
    if store is None:
        store = open_store(
            settings.store,
            clock=clock,
            max_skew=settings.max_skew,
            redis_prefix=settings.redis_prefix,
            redis_timeout=settings.redis_timeout,
        )
    return TopHosts(settings, store)


def app_from_environ() -> TopHosts:
    """The app of one ``--workers`` process: uvicorn imports and calls this factory in
    each worker, which gets its settings as ``TOPHOSTS_*`` variables (``Settings.environ``)."""
    return create_app(config.resolve(None, os.environ))
