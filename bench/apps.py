"""The servers the bench runs beside tophosts, on the same stack.

* ``ceiling``: a bare ASGI app that reads the body and answers ``{"status":"ok"}``
  to every request. Nothing can be faster on this uvicorn set-up, so it bounds
  what tophosts can reach.
* ``naive``: every raw event kept in a :class:`sortedcontainers.SortedList`,
  scanned per query. It shows what tophosts' pre-aggregated windows buy.
* ``tophosts-nometrics``: ``tophosts serve`` itself, with a
  :class:`~tophosts.metrics.NullMetrics` handed to the app: no per-request metrics
  update. The metrics scenarios measure what metrics cost ingest.
* ``tophosts-stdlog``: ``tophosts serve`` at ``--log-level info`` with each access
  line a :mod:`logging` record of its own (:func:`serve_line_by_line`), as before
  :mod:`tophosts.logs` queued them: what the access log cost before.

Every one is served with the uvicorn settings of ``tophosts serve`` itself
(:func:`tophosts.server.uvicorn_options`), so that they differ from tophosts by
the app alone: ``python -m bench.apps ceiling --port 9000``. They live here, in
the bench, and never in the product.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from tophosts.asgi import Message, Receive, Scope, Send
from tophosts.config import Settings
from tophosts.metrics import NullMetrics
from tophosts.windows import Window, past

_OK_BODY = b'{"status":"ok"}'
_JSON = (b"content-type", b"application/json")
_OK_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [_JSON, (b"content-length", str(len(_OK_BODY)).encode())],
}
_OK: Message = {"type": "http.response.body", "body": _OK_BODY}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def _json(send: Send, status: int, payload: Any) -> None:
    body = msgspec.json.encode(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def ceiling(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body, answer ``{"status":"ok"}``: whatever the method and path."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "http":
        return None
    await _body(receive)
    await send(_OK_START)
    await send(_OK)


class Naive:
    """Raw events in a SortedList of ``(timestamp, sequence, {host: count})``.

    Ingest keeps each event as it came; ``GET /stats`` sums every event of the
    window and ranks the hosts. No validation beyond what decoding gives: it is
    a yardstick, not a product.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.events = SortedList()
        self.seq = itertools.count()
        self.one = msgspec.json.Decoder(dict[str, int])
        self.many = msgspec.json.Decoder(list[dict[str, int]])

    def add(self, objs: Sequence[dict[str, int]]) -> None:
        seq = self.seq
        self.events.update((obj.pop("timestamp"), next(seq), obj) for obj in objs)

    def top(self, window: Window, limit: int) -> list[tuple[str, int]]:
        start, end = past(self.clock(), window)
        totals: dict[str, int] = {}
        get = totals.get
        for _, _, counts in self.events.irange((start,), (end,), inclusive=(True, False)):
            for host, n in counts.items():
                totals[host] = get(host, 0) + n
        return heapq.nsmallest(limit, totals.items(), key=lambda kv: (-kv[1], kv[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return None
        path = scope["path"]
        body = await _body(receive)
        try:
            if path == "/counter":
                self.add([self.one.decode(body)])
                await send(_OK_START)
                await send(_OK)
                return None
            if path == "/counters":
                objs = self.many.decode(body)
                self.add(objs)
                return await _json(send, 200, {"status": "ok", "accepted": len(objs)})
        except (msgspec.DecodeError, KeyError):
            return await _json(send, 400, {"error": "bad event"})
        if path == "/stats":
            query = dict(
                part.split("=", 1) for part in scope["query_string"].decode().split("&") if part
            )
            window = Window.from_label(query.get("stats_type", "minute"))
            top = self.top(window, int(query.get("limit", "10")))
            return await _json(send, 200, {"top_hosts": dict(top)})
        if path == "/healthz":
            return await _json(send, 200, {"status": "ok"})
        return await _json(send, 404, {"error": "no route"})


def serve_without_metrics(argv: Sequence[str]) -> int:
    """``tophosts serve`` with ``argv`` and a NullMetrics: no per-request metrics update."""
    from tophosts import config, server

    settings = config.load(argv, {})
    return server.serve(settings, NullMetrics("redis" if settings.store != "memory" else "memory"))


def serve_line_by_line(argv: Sequence[str]) -> int:
    """``tophosts serve`` with ``argv``, each access line a :mod:`logging` record written
    on its own, as before :mod:`tophosts.logs` queued them: the access log's "before"."""
    from tophosts import cli, logs

    configure = logs.configure

    def line_by_line(
        level: str, fmt: str, stream: TextIO | None = None, access_log: str = "all"
    ) -> None:
        configure(level, fmt, stream)
        logs._lines = None  # logs.request() then makes a record per line, as it used to

    setattr(logs, "configure", line_by_line)  # noqa: B010 - for this process only
    return cli.main(["serve", *argv])


def serve(app: Any, port: int, log_level: str = "warning") -> None:
    import uvicorn

    from tophosts.server import uvicorn_options

    settings = Settings(host="127.0.0.1", port=port, log_level=log_level)
    uvicorn.run(app, **uvicorn_options(settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apps")
    parser.add_argument(
        "app", choices=("ceiling", "naive", "tophosts-nometrics", "tophosts-stdlog")
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args, rest = parser.parse_known_args(argv)
    if args.app in ("tophosts-nometrics", "tophosts-stdlog"):
        # The same command line as the bench's tophosts (servers.command), any
        # further flags passed on to it.
        where = ["--host", "127.0.0.1", "--port", str(args.port), "--log-level", args.log_level]
        if args.app == "tophosts-stdlog":
            return serve_line_by_line([*where, *rest])
        return serve_without_metrics([*where, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    serve(ceiling if args.app == "ceiling" else Naive(), args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
