"""``GET /stats``: the top hosts of the past round minute or hour.

A plain, valid query on a store that answers synchronously (the memory store)
is served without Starlette (:meth:`Stats.fast`): polled in a loop beside
ingest, the Starlette route cost about four ingest requests per query. Every
other query, and every error, goes through :meth:`Stats.endpoint`. Both read
the clock once, so the ``X-Window-*`` headers and the body name one window.
"""

from __future__ import annotations

import logging
from time import perf_counter

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tophosts import logs
from tophosts.asgi import Scope, Send, content_length
from tophosts.metrics import Metrics
from tophosts.openapi import MAX_LIMIT
from tophosts.responses import error, unavailable
from tophosts.store import Clock, Store, StoreUnavailable, SyncStore, TopHosts
from tophosts.windows import Window, past

PARAMS = ("stats_type", "limit")
_WINDOWS = {b"minute": Window.MINUTE, b"hour": Window.HOUR}


class Stats:
    def __init__(self, store: Store, clock: Clock, default_limit: int, metrics: Metrics) -> None:
        self.store = store
        self.sync: SyncStore | None = store.sync
        self.clock = clock
        self.default_limit = default_limit
        self.metrics = metrics

    def plain(self, query: bytes) -> tuple[Window, int | None] | None:
        """``(window, limit)`` when the fast lane can answer this query string, else None."""
        return simple_query(query) if self.sync is not None else None

    async def fast(self, scope: Scope, send: Send, window: Window, limit: int | None) -> None:
        """Answer a :meth:`plain` query as :meth:`endpoint` would, with the same body,
        headers, metrics and access log, without Starlette."""
        assert self.sync is not None
        started = perf_counter()
        now = self.clock()
        body, headers = _answer(
            now, window, self.sync.top_now(window, limit or self.default_limit, now)
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"x-window-start", headers["X-Window-Start"].encode()),
                    (b"x-window-end", headers["X-Window-End"].encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        seconds = perf_counter() - started
        self.metrics.request("/stats", 200, seconds)
        if logs.access.isEnabledFor(logging.INFO):
            logs.request("GET", "/stats", 200, seconds, content_length(scope), len(body))

    async def endpoint(self, request: Request) -> Response:
        seen: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in PARAMS:
                return error(
                    400,
                    f"unknown query parameter {name!r}; /stats accepts "
                    f"stats_type=minute|hour and limit=1..{MAX_LIMIT}",
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
        limit = self.default_limit
        if raw_limit is not None:
            if not (raw_limit.isascii() and raw_limit.isdigit()) or not (
                1 <= int(raw_limit) <= MAX_LIMIT
            ):
                return error(
                    400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}"
                )
            limit = int(raw_limit)
        now = self.clock()
        try:
            top = await self.store.top(window, limit, now)
        except StoreUnavailable as exc:
            return unavailable(exc)
        body, headers = _answer(now, window, top)
        return Response(body, 200, headers, "application/json")


def _answer(now: float, window: Window, top: TopHosts) -> tuple[bytes, dict[str, str]]:
    """The body and the window headers of an answer at clock reading ``now``.

    The window is in headers, so that the body stays exactly ``{"top_hosts": ...}``
    and a client (the dashboard) can label it with the server's clock, not its own.
    """
    span = past(now, window)
    body = msgspec.json.encode({"top_hosts": dict(top)})
    return body, {"X-Window-Start": str(span.start), "X-Window-End": str(span.end)}


def simple_query(query: bytes) -> tuple[Window, int | None] | None:
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
