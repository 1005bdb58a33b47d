"""The servers the bench runs beside tophosts, on the same stack.

* ``ceiling``: a bare ASGI app that reads the body and answers ``{"status":"ok"}``
  to every request. Nothing can be faster on this uvicorn set-up, so it bounds
  what tophosts can reach.
* ``naive``: every raw event kept in a :class:`sortedcontainers.SortedList`,
  scanned per query. It shows what tophosts' pre-aggregated windows buy.
* ``tophosts-nometrics``: ``tophosts serve`` itself, built the same way, but
  without a metrics update on the request path: :class:`NoMetrics` in place of
  the app's :class:`~tophosts.metrics.Metrics`, and the ingest methods
  recompiled from their own source without the statements that update metrics
  (:func:`bare_ingest`). The metrics scenarios measure what metrics cost ingest.
* ``tophosts-stdlog``: ``tophosts serve`` at ``--log-level info`` with each access
  line a :mod:`logging` record of its own (:func:`serve_line_by_line`), as before
  :mod:`tophosts.logs` queued them: what the access log cost before.

The first two are served by :func:`serve` with the same uvicorn settings as
``tophosts serve`` (see :data:`UVICORN_OPTIONS`): ``python -m tophosts.bench.apps
ceiling --port 9000``. They live here, in the bench, and never in the product.
"""

from __future__ import annotations
import __future__

import argparse
import ast
import heapq
import importlib.util
import inspect
import itertools
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from sortedcontainers import SortedList  # type: ignore[import-untyped]

from tophosts.asgi import Message, Receive, Scope, Send
from tophosts.config import Settings
from tophosts.ingest import Ingest
from tophosts.metrics import NullMetrics
from tophosts.server.protocol import Protocol
from tophosts.windows import Window, past

# Keep in step with tophosts.cli.serve (default settings, one worker);
# tests/test_bench.py checks they agree. The protocol is the product's own
# (httptools with read timeouts), so the ceiling differs from tophosts by the
# app alone.
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    "http": Protocol,
    "timeout_keep_alive": Settings().timeout_keep_alive,
    "lifespan": "on",
    "access_log": False,
    "log_config": None,
    "server_header": False,
    "proxy_headers": False,
}

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


# tophosts with no metrics updates on the request path (the metrics scenarios).
NoMetrics = NullMetrics


# The ingest methods whose metrics statements BareIngest drops.
INGEST_METHODS = ("_one", "_many", "_fail", "_answer")


def _is_metrics(node: ast.expr) -> bool:
    """``metrics`` or ``self.metrics``."""
    if isinstance(node, ast.Name):
        return node.id == "metrics"
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "metrics"
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )


def _updates_metrics(stmt: ast.stmt) -> bool:
    """``metrics = self.metrics``, ``metrics.x += ...``, ``metrics.x = ...``, ``metrics.f(...)``."""
    match stmt:
        case ast.Assign(targets=[ast.Name(id="metrics")], value=value):
            return _is_metrics(value)
        case (
            ast.Assign(targets=[ast.Attribute(value=owner)])
            | ast.AugAssign(target=ast.Attribute(value=owner))
        ):
            return _is_metrics(owner)
        case ast.Expr(value=ast.Call(func=ast.Attribute(value=owner))):
            return _is_metrics(owner)
    return False


class _DropMetrics(ast.NodeTransformer):
    """Drops every statement that updates metrics, at any depth (an emptied block gets ``pass``)."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                continue
            kept = [stmt for stmt in block if not _updates_metrics(stmt)]
            if len(kept) != len(block):
                setattr(node, field, kept or [ast.Pass()])
        return node


def stripped(cls: type[Any], name: str) -> ast.Module:
    """The source of ``cls.name`` without the statements that update metrics."""
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    return ast.fix_missing_locations(_DropMetrics().visit(ast.parse(source)))  # type: ignore[no-any-return]


def without_metrics(cls: type[Any], names: Sequence[str]) -> dict[str, Any]:
    """``cls``'s methods ``names``, recompiled from :func:`stripped` source in their
    module's namespace. Built from the product's source each time, so the variant
    never drifts from it.
    """
    module = sys.modules[cls.__module__]
    out = {}
    for name in names:
        code = compile(
            stripped(cls, name),
            f"<{cls.__name__}.{name} without metrics>",
            "exec",
            flags=__future__.annotations.compiler_flag,
            dont_inherit=True,
        )
        namespace: dict[str, Any] = {}
        exec(code, vars(module), namespace)  # the product's own source, edited
        out[name] = namespace[name]
        out[name].__qualname__ = f"BareIngest.{name}"
    return out


def bare_ingest() -> type[Ingest]:
    """:class:`~tophosts.ingest.Ingest` with no metrics updates on its request path."""
    return type("BareIngest", (Ingest,), without_metrics(Ingest, INGEST_METHODS))


def serve_without_metrics(argv: Sequence[str]) -> int:
    """``tophosts serve`` with ``argv``, its app built with :func:`bare_ingest` and
    :class:`NoMetrics`: tophosts with no metrics updates on the request path."""
    from tophosts import app, cli

    # TopHosts builds its Metrics and Ingest from these names of tophosts.app.
    setattr(app, "Metrics", NoMetrics)  # noqa: B010 - a deliberate patch, for this process only
    setattr(app, "Ingest", bare_ingest())  # noqa: B010
    return cli.main(["serve", *argv])


def serve_line_by_line(argv: Sequence[str]) -> int:
    """``tophosts serve`` with ``argv``, each access line a :mod:`logging` record written
    on its own, as before :mod:`tophosts.logs` queued them: the access log's "before"."""
    from tophosts import cli, logs

    configure = logs.configure

    def line_by_line(level: str, fmt: str) -> None:
        configure(level, fmt)
        logs._lines = None  # logs.request() then makes a record per line, as it used to

    setattr(logs, "configure", line_by_line)  # noqa: B010 - for this process only
    return cli.main(["serve", *argv])


def serve(app: Any, port: int, log_level: str = "warning") -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level=log_level, **UVICORN_OPTIONS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tophosts.bench.apps")
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
