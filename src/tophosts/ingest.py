"""The ingest fast lane: ``POST /counter`` and ``POST /counters`` as plain ASGI.

These two routes carry nearly all the traffic, so they skip Starlette's request
objects and middleware: read the body under the size limit, decode, apply, and
answer with prebuilt headers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from time import perf_counter
from typing import Any

import msgspec

from tophosts import logs
from tophosts.events import Decoder, Event, EventError
from tophosts.metrics import Metrics
from tophosts.store import Added, Store, StoreUnavailable, WriteUncertain

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encode = msgspec.json.encode
_JSON = (b"content-type", b"application/json")
_OK_BODY = b'{"status":"ok"}'
_OK_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [_JSON, (b"content-length", str(len(_OK_BODY)).encode())],
}
_OK: Message = {"type": "http.response.body", "body": _OK_BODY}
_EXPIRED_BODY = b'{"status":"expired"}'
_EXPIRED_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [_JSON, (b"content-length", str(len(_EXPIRED_BODY)).encode())],
}
_EXPIRED: Message = {"type": "http.response.body", "body": _EXPIRED_BODY}
RETRY_AFTER = "1"
_RETRY = [(b"retry-after", RETRY_AFTER.encode())]
_CLOSE = [(b"connection", b"close")]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> int:
    """Send ``payload`` as a JSON response; returns the body size."""
    body = _encode(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return len(body)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing it as soon as it is known to pass ``limit``.

    A declared Content-Length over the limit is refused before reading a byte;
    a chunked body is refused as soon as what arrived passes it.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                raise BodyTooLarge
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False) or message["type"] != "http.request":
        return await read_rest(message, receive, limit)
    if len(body) > limit:
        raise BodyTooLarge
    return body


async def read_rest(first: Message, receive: Receive, limit: int) -> bytes:
    """The body from its ``first`` message on, when it comes in several (or none)."""
    message = first
    chunks = []
    size = 0
    while True:
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _header(scope: Scope, wanted: bytes) -> bytes:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return b""


def _is_ndjson(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type").split(b";", 1)[0].strip().lower()
    return content_type in (b"application/x-ndjson", b"application/jsonl")


# Failures answered by the route itself; anything else is a server error.
_ANSWERED = (EventError, BodyTooLarge, StoreUnavailable, WriteUncertain, ClientGone)


class Ingest:
    """ASGI endpoint for both ingest routes; ``batch`` picks ``/counters``."""

    def __init__(
        self, store: Store, decoder: Decoder, max_body: int, batch: bool, metrics: Metrics
    ) -> None:
        self.store = store
        self.decoder = decoder
        self.max_body = max_body
        self.batch = batch
        self.metrics = metrics
        self.route = "/counters" if batch else "/counter"
        # A store that applies events synchronously (the memory store) is called
        # directly: no coroutine per request on the hot path.
        self.add_now: Callable[[Sequence[Event]], Added] | None = getattr(store, "add_now", None)
        self.add_one_now: Callable[[int, dict[str, int], int], Added] | None = getattr(
            store, "add_one_now", None
        )
        self.handle = self._many if batch else self._one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    async def _one(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /counter``: the hottest route, so the common case is written out flat."""
        started = perf_counter()
        body = b""
        try:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit() or int(value) > self.max_body:
                        raise BodyTooLarge
                    break
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False) or message["type"] != "http.request":
                body = await read_rest(message, receive, self.max_body)
            elif len(body) > self.max_body:
                raise BodyTooLarge
            ts, counts = self.decoder.one(body)
            host_counts = sum(counts.values())
            if self.add_one_now is not None:
                added = self.add_one_now(ts, counts, host_counts)
            else:
                added = await self.store.add([(ts, counts)])
        except _ANSWERED as exc:
            return await self._fail(send, started, body, exc)
        metrics = self.metrics
        if added.accepted:
            metrics.accepted += 1
            metrics.host_counts += host_counts
            await send(_OK_START)
            await send(_OK)
            out = len(_OK_BODY)
        else:
            metrics.expired += 1
            await send(_EXPIRED_START)
            await send(_EXPIRED)
            out = len(_EXPIRED_BODY)
        seconds = perf_counter() - started
        metrics.request("/counter", 200, seconds)
        if logs.access.isEnabledFor(logging.INFO):
            logs.request("POST", "/counter", 200, seconds, len(body), out)
        return None

    async def _many(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /counters``: a JSON array or NDJSON body of events, applied whole."""
        started = perf_counter()
        body = b""
        events: list[Event] = []
        try:
            body = await read_body(scope, receive, self.max_body)
            events = self.decoder.many(body, _is_ndjson(scope))
            add_now = self.add_now
            added = add_now(events) if add_now is not None else await self.store.add(events)
        except _ANSWERED as exc:
            return await self._fail(send, started, body, exc, len(events))
        metrics = self.metrics
        metrics.accepted += added.accepted
        metrics.expired += added.expired
        metrics.host_counts += added.host_counts  # the store sums them anyway
        payload = {"status": "ok", "accepted": added.accepted, "expired": added.expired}
        return await self._answer(send, started, 200, payload, body)

    async def _fail(
        self, send: Send, started: float, body: bytes, exc: Exception, events: int = 0
    ) -> None:
        """Answer an ingest failure the client can act on (ClientGone: nobody to answer)."""
        if isinstance(exc, EventError):
            self.metrics.rejected += events or 1
            payload: dict[str, Any] = {"error": exc.message}
            # A store names the event's place in what it was given; a single
            # event (POST /counter) has no place to name.
            if exc.index is not None and self.batch:
                payload["index"] = exc.index
            await self._answer(send, started, exc.status, payload, body, exc.message)
        elif isinstance(exc, BodyTooLarge):
            self.metrics.rejected += 1
            message = f"the request body is larger than {self.max_body} bytes (--max-body)"
            await self._answer(send, started, 413, {"error": message}, body, message, _CLOSE)
        elif isinstance(exc, StoreUnavailable):
            message = f"the store is unavailable, nothing was applied; retry: {exc}"
            await self._answer(send, started, 503, {"error": message}, body, message, _RETRY)
        elif isinstance(exc, WriteUncertain):
            # Not a 503: a retry could count the events twice. The client decides.
            message = f"the store did not confirm the write: {exc}"
            await self._answer(send, started, 504, {"error": message}, body, message)

    async def _answer(
        self,
        send: Send,
        started: float,
        status: int,
        payload: Any,
        body: bytes,
        error: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        out = await send_json(send, status, payload, headers)
        seconds = perf_counter() - started
        self.metrics.request(self.route, status, seconds)
        if logs.access.isEnabledFor(logging.INFO):
            logs.request("POST", self.route, status, seconds, len(body), out, error)
