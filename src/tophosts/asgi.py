"""ASGI, written once: the type aliases, reading a bounded body, sending JSON.

The ingest fast lane, the auth guard and the load shedder speak plain ASGI
(no Starlette request objects on the hot path); they all use these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_encode = msgspec.json.encode
JSON = (b"content-type", b"application/json")


class BodyTooLarge(Exception):
    """The body is, or is declared to be, larger than the limit."""


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is nobody to answer."""


def header(scope: Scope, wanted: bytes) -> bytes:
    """The first value of the (lower-case) header ``wanted``, or ``b""``."""
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return b""


def content_length(scope: Scope) -> int:
    """The declared Content-Length, 0 when absent or not a number."""
    value = header(scope, b"content-length")
    return int(value) if value.isdigit() else 0


def json_start(status: int, body: bytes, headers: Headers | None = None) -> Message:
    """The ``http.response.start`` message of a JSON answer of ``body``."""
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
    }


class _Refusal(msgspec.Struct):
    error: str


_refusal = msgspec.json.Decoder(_Refusal)


def error_of(body: bytes) -> str | None:
    """The ``error`` of a JSON refusal's body (``{"error": ...}``), None if it has none."""
    try:
        return _refusal.decode(body).error
    except msgspec.DecodeError:
        return None


async def send_json(send: Send, status: int, payload: Any, headers: Headers | None = None) -> int:
    """Send ``payload`` as a JSON response; returns the body size."""
    body = _encode(payload)
    await send(json_start(status, body, headers))
    await send({"type": "http.response.body", "body": body})
    return len(body)


class RepeatedHeader(Exception):
    """A header that may come once came more than once."""


def scan(scope: Scope, limit: int, wanted: bytes) -> bytes | None:
    """One pass over the headers of a request with a body: refuse a declared
    Content-Length over ``limit`` before a byte is read (BodyTooLarge), and return
    the value of the header ``wanted``: None when absent, RepeatedHeader if it
    comes more than once."""
    found = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                raise BodyTooLarge
        elif name == wanted:
            if found is not None:
                raise RepeatedHeader(wanted)
            found = value
    return found


async def read_body(
    receive: Receive, limit: int, slow: Callable[[], Awaitable[None]] | None = None
) -> bytes:
    """The whole request body (its Content-Length already checked by :func:`scan`),
    refused as soon as what arrived passes ``limit`` (a chunked body).

    ``slow``, if given, is awaited once before reading on when the body does not
    come whole with the first message: it is still arriving.
    """
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False) or message["type"] != "http.request":
        if slow is not None and message["type"] == "http.request":
            await slow()
        return await _read_rest(message, receive, limit)
    if len(body) > limit:
        raise BodyTooLarge
    return body


async def _read_rest(first: Message, receive: Receive, limit: int) -> bytes:
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
