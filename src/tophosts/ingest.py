"""The ingest fast lane: ``POST /counter`` and ``POST /counters`` as plain ASGI.

These two routes carry nearly all the traffic, so they skip Starlette's request
objects and middleware: read the body under the size limit, decode, apply, and
answer with prebuilt headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import msgspec

from tophosts.events import Decoder, Event, EventError
from tophosts.store import Added, Store, StoreUnavailable

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


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = _encode(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge
    if not message.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope: Scope, wanted: bytes) -> bytes:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return b""


def _is_ndjson(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type").split(b";", 1)[0].strip().lower()
    return content_type in (b"application/x-ndjson", b"application/jsonl")


class Ingest:
    """ASGI endpoint for both ingest routes; ``batch`` picks ``/counters``."""

    def __init__(self, store: Store, decoder: Decoder, max_body: int, batch: bool) -> None:
        self.store = store
        self.decoder = decoder
        self.max_body = max_body
        self.batch = batch
        # A store that applies events synchronously (the memory store) is called
        # directly: no coroutine per request on the hot path.
        self.add_now: Callable[[Sequence[Event]], Added] | None = getattr(store, "add_now", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(scope, receive, self.max_body)
            events: Sequence[Event]
            if self.batch:
                events = self.decoder.many(body, _is_ndjson(scope))
            else:
                events = (self.decoder.one(body),)
            add_now = self.add_now
            added = add_now(events) if add_now is not None else await self.store.add(events)
        except EventError as exc:
            payload: dict[str, Any] = {"error": exc.message}
            if exc.index is not None:
                payload["index"] = exc.index
            await send_json(send, exc.status, payload)
            return
        except BodyTooLarge:
            await send_json(
                send,
                413,
                {"error": f"the request body is larger than {self.max_body} bytes (--max-body)"},
                [(b"connection", b"close")],
            )
            return
        except StoreUnavailable as exc:
            await send_json(
                send,
                503,
                {"error": f"the store is unavailable, nothing was applied; retry: {exc}"},
                [(b"retry-after", RETRY_AFTER.encode())],
            )
            return
        except ClientGone:
            return
        if self.batch:
            await send_json(
                send, 200, {"status": "ok", "accepted": added.accepted, "expired": added.expired}
            )
        elif added.accepted:
            await send(_OK_START)
            await send(_OK)
        else:
            await send(_EXPIRED_START)
            await send(_EXPIRED)
