"""``GET /stats``: the top hosts of the past round minute or hour; with ``at``, of any
closed window within the retention; and ``GET /stats/history``, of a range of them.

A plain, valid query on a store that answers synchronously (the memory store)
is served without Starlette (:meth:`Stats.fast`): polled in a loop beside
ingest, the Starlette route cost about four ingest requests per query. Every
other query, and every error, goes through :meth:`Stats.endpoint` (or
:meth:`Stats.history`). Each reads the clock once, so the ``X-Window-*``
headers and the body name one window.

History (see :mod:`tophosts.windows`): the past window is answered live, as
``/stats`` answers it; an older one from the store's history, which keeps the
top ``--history-top`` hosts of each window for ``--retention`` after it froze.
"""

from __future__ import annotations

from time import perf_counter

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tophosts import logs
from tophosts.asgi import Scope, Send, content_length
from tophosts.metrics import Metrics
from tophosts.openapi import MAX_LIMIT
from tophosts.responses import error, unavailable
from tophosts.store import Clock, History, Store, StoreUnavailable, SyncStore, TopHosts
from tophosts.windows import Place, Window, duration, floor, oldest_kept, past, place

PARAMS = ("stats_type", "limit", "at")
HISTORY_PARAMS = ("stats_type", "from", "to", "limit")
MAX_WINDOWS = 1440
"""Most windows one ``/stats/history`` call may span (a day of minutes)."""
MAX_TIME = 2**53 - 1
_WINDOWS = {b"minute": Window.MINUTE, b"hour": Window.HOUR}


class Stats:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        default_limit: int,
        metrics: Metrics,
        history_top: int = 100,
    ) -> None:
        self.store = store
        self.sync: SyncStore | None = store.sync
        self.clock = clock
        self.default_limit = default_limit
        self.metrics = metrics
        self.archive: History | None = store.history
        self.retention = self.archive.retention if self.archive else 0
        self.history_top = self.archive.history_top if self.archive else history_top

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
        if logs.wanted(200):
            logs.request("GET", "/stats", 200, seconds, content_length(scope), len(body))

    async def endpoint(self, request: Request) -> Response:
        query = _query(
            request,
            PARAMS,
            f"/stats accepts stats_type=minute|hour, limit=1..{MAX_LIMIT} and at=<unix seconds>",
        )
        if isinstance(query, Response):
            return query
        seen, window, limit = query
        if "at" in seen:
            return await self._at(window, seen["at"], limit)
        now = self.clock()
        try:
            top = await self.store.top(window, limit or self.default_limit, now)
        except StoreUnavailable as exc:
            return unavailable(exc)
        body, headers = _answer(now, window, top)
        return Response(body, 200, headers, "application/json")

    async def _at(self, window: Window, raw_at: str, limit: int | None) -> Response:
        """``/stats?at=``: the window that holds ``at``, if it has closed and is kept."""
        at = _time(raw_at, "at")
        if isinstance(at, Response):
            return at
        size, now = window.value, self.clock()
        start = floor(at, size)
        where = place(now, size, start, self.retention)
        if where is Place.OPEN:
            latest = past(now, window)
            return error(
                400,
                f"the {window.label} [{start}, {start + size}) that holds at={at} is not "
                f"closed yet; the latest closed {window.label} is [{latest.start}, "
                f"{latest.end}): ask for an at before {latest.end}",
            )
        if where is Place.GONE:
            return self._too_old(window, start, now)
        try:
            if where is Place.PAST:
                top = await self.store.top(window, limit or self.default_limit, now)
            else:
                kept_limit = self._history_limit(limit)
                if isinstance(kept_limit, Response):
                    return kept_limit
                assert self.archive is not None  # a kept window means history is on
                top = (await self.archive.closed(window, [start], kept_limit))[0]
        except StoreUnavailable as exc:
            return unavailable(exc)
        body = msgspec.json.encode({"top_hosts": dict(top)})
        headers = {"X-Window-Start": str(start), "X-Window-End": str(start + size)}
        return Response(body, 200, headers, "application/json")

    async def history(self, request: Request) -> Response:
        """``GET /stats/history``: every closed window in ``[from, to)`` that is kept."""
        query = _query(
            request,
            HISTORY_PARAMS,
            "/stats/history accepts stats_type=minute|hour, from=<unix seconds>, "
            f"to=<unix seconds> and limit=1..{self.history_top} (--history-top)",
        )
        if isinstance(query, Response):
            return query
        seen, window, given = query
        limit = self._history_limit(given)
        if isinstance(limit, Response):
            return limit
        if "from" not in seen or "to" not in seen:
            return error(
                400,
                "/stats/history needs from and to, in Unix seconds: it lists the windows in "
                "[from, to), such as ?stats_type=minute&from=1700000000&to=1700003600",
            )
        since, until = _time(seen["from"], "from"), _time(seen["to"], "to")
        if isinstance(since, Response):
            return since
        if isinstance(until, Response):
            return until
        if since > until:
            return error(400, f"from ({since}) is after to ({until}); from must be <= to")
        size, now = window.value, self.clock()
        # The windows that overlap [from, to).
        spanned = range(floor(since, size), until, size) if since < until else range(0)
        if len(spanned) > MAX_WINDOWS:
            return error(
                400,
                f"[from, to) spans {len(spanned)} {window.label}s; /stats/history answers at "
                f"most {MAX_WINDOWS} windows per call: ask for a shorter range",
            )
        # Those closed and kept: frozen ones within the retention, then the past one.
        latest = past(now, window).start
        oldest = oldest_kept(now, size, self.retention)
        kept = range(max(spanned.start, oldest), min(until, latest), size) if spanned else spanned
        with_past = latest in spanned
        try:
            tops = await self.archive.closed(window, kept, limit) if self.archive and kept else []
            if with_past:
                tops.append(await self.store.top(window, limit, now))
        except StoreUnavailable as exc:
            return unavailable(exc)
        starts = [*kept, latest] if with_past else list(kept)
        body = msgspec.json.encode(
            {
                "windows": [
                    {"start": start, "end": start + size, "top_hosts": dict(top)}
                    for start, top in zip(starts, tops, strict=True)
                ]
            }
        )
        return Response(body, 200, media_type="application/json")

    def _history_limit(self, limit: int | None) -> int | Response:
        """The limit of a history query: at most ``--history-top``; by default ``--top``,
        or ``--history-top`` if that is less."""
        if limit is None:
            return min(self.default_limit, self.history_top)
        if limit > self.history_top:
            return error(
                400,
                f"limit {limit} is more than --history-top ({self.history_top}): history "
                f"keeps the top {self.history_top} hosts of each window; ask for a limit "
                f"from 1 to {self.history_top}, or start tophosts with a larger --history-top",
            )
        return limit

    def _too_old(self, window: Window, start: int, now: float) -> Response:
        retention = duration(self.retention)
        if not self.retention:
            return error(
                404,
                f"the {window.label} [{start}, {start + window.value}) is older than "
                f"--retention ({retention}): history is off, so only the past "
                f"{window.label} can be asked about; start tophosts with --retention 24h "
                "(say) to keep history",
            )
        oldest = oldest_kept(now, window.value, self.retention)
        return error(
            404,
            f"the {window.label} [{start}, {start + window.value}) is older than --retention "
            f"({retention}): a window is kept for {retention} after it stops being the past "
            f"{window.label}; the oldest "
            f"{window.label} kept now starts at {oldest}",
        )


def _params(request: Request, accepted: tuple[str, ...], usage: str) -> dict[str, str] | Response:
    """The query parameters, each at most once and each one of ``accepted``."""
    seen: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in accepted:
            return error(400, f"unknown query parameter {name!r}; {usage}")
        if name in seen:
            return error(400, f"query parameter {name!r} is given more than once")
        seen[name] = value
    return seen


def _query(
    request: Request, accepted: tuple[str, ...], usage: str
) -> tuple[dict[str, str], Window, int | None] | Response:
    """The parameters (:func:`_params`), the window and the ``limit`` given, or the 400."""
    seen = _params(request, accepted, usage)
    if isinstance(seen, Response):
        return seen
    window = _window(seen)
    if isinstance(window, Response):
        return window
    limit = _limit(seen, MAX_LIMIT)
    if isinstance(limit, Response):
        return limit
    return seen, window, limit


def _window(seen: dict[str, str]) -> Window | Response:
    label = seen.get("stats_type", "minute")
    try:
        return Window.from_label(label) if label.islower() else _bad_window(label)
    except KeyError:
        return _bad_window(label)


def _bad_window(label: str) -> Response:
    return error(400, f"stats_type must be 'minute' or 'hour', got {label!r}")


def _limit(seen: dict[str, str], most: int) -> int | Response | None:
    """The ``limit`` given (1 to ``most``), None if none."""
    raw = seen.get("limit")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not (1 <= int(raw) <= most):
        return error(400, f"limit must be an integer from 1 to {most}, got {raw!r}")
    return int(raw)


def _time(raw: str, name: str) -> int | Response:
    """A time parameter: Unix seconds (UTC), an integer from 0 to 2^53 - 1."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16) or int(raw) > MAX_TIME:
        return error(
            400,
            f"{name} must be a time in Unix seconds (UTC), an integer from 0 to {MAX_TIME}, "
            f"got {raw!r}",
        )
    return int(raw)


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
