"""The ingest fast lane: ``POST /counter`` and ``POST /counters`` as plain ASGI.

These two routes carry nearly all the traffic, so they skip Starlette's request
objects and middleware: read the body under the size limit, decode, apply, and
answer with prebuilt headers. A request with an ``Idempotency-Key`` takes
:meth:`Ingest._keyed` instead, for both routes; one without pays for nothing
but looking for the header in the scan that checks the Content-Length.

A batch body past ``AT_ONCE_BYTES`` is decoded a slice at a time, summed by the
store a slice at a time, and let go of a slice at a time after its answer, the
event loop serving other requests between slices (README, "Batch size").
"""

from __future__ import annotations

import asyncio
from functools import partial
from time import perf_counter
from typing import Any

from tophosts import gcpause, idempotency, logs
from tophosts.asgi import (
    BodyTooLarge,
    ClientGone,
    Headers,
    Message,
    Receive,
    RepeatedHeader,
    Scope,
    Send,
    header,
    json_start,
    read_body,
    scan,
    send_json,
)
from tophosts.events import AT_ONCE_BYTES, Decoder, Event, EventError
from tophosts.gcpause import Share
from tophosts.idempotency import KeyInFlight, KeyRefused
from tophosts.metrics import Metrics
from tophosts.responses import RETRY_AFTER
from tophosts.store import Store, StoreUnavailable, WriteUncertain

_OK_BODY = b'{"status":"ok"}'
_OK_START = json_start(200, _OK_BODY)
_OK: Message = {"type": "http.response.body", "body": _OK_BODY}
_EXPIRED_BODY = b'{"status":"expired"}'
_EXPIRED_START = json_start(200, _EXPIRED_BODY)
_EXPIRED: Message = {"type": "http.response.body", "body": _EXPIRED_BODY}
_RETRY = [(b"retry-after", RETRY_AFTER.encode())]
_CLOSE = [(b"connection", b"close")]
_REPLAYED = [idempotency.REPLAYED]
_OK_REPLAYED_START = json_start(200, _OK_BODY, _REPLAYED)
_EXPIRED_REPLAYED_START = json_start(200, _EXPIRED_BODY, _REPLAYED)
_KEY = idempotency.HEADER


async def _drop(events: list[Event], cuts: list[int]) -> None:
    """Let go of a batch decoded in slices a slice at a time (``cuts``: where each
    starts), after its answer: the events' dicts, freed at once, held the loop 11-27
    ms at 8 MiB. The stores keep none of them."""
    for start in reversed(cuts):
        del events[start:]
        await asyncio.sleep(0)


def _is_ndjson(scope: Scope) -> bool:
    content_type = header(scope, b"content-type").split(b";", 1)[0].strip().lower()
    return content_type in (b"application/x-ndjson", b"application/jsonl")


# Failures answered by the route itself; anything else is a server error.
_ANSWERED = (
    EventError,
    BodyTooLarge,
    StoreUnavailable,
    WriteUncertain,
    ClientGone,
    KeyRefused,
    RepeatedHeader,
)


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
        self.path = self.route.encode()
        # A store that applies events synchronously (the memory store) is called
        # directly: no coroutine per request on the hot path.
        self.sync = store.sync
        self.handle = self._many if batch else self._one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    async def _one(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /counter``: the hottest route, so the common case is written out flat."""
        started = perf_counter()
        body = b""
        try:
            key = scan(scope, self.max_body, _KEY)
            if key is not None:
                return await self._keyed(scope, receive, send, started, key)
            body = await read_body(receive, self.max_body)
            ts, counts = self.decoder.one(body)
            host_counts = sum(counts.values())
            if self.sync is not None:
                added = self.sync.add_one_now(ts, counts, host_counts)
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
        if logs.wanted(200):
            logs.request("POST", "/counter", 200, seconds, len(body), out)
        return None

    async def _many(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /counters``: a JSON array or NDJSON body of events, applied whole; the
        garbage collector held off from the decode of a large one until it is let go of
        (:mod:`tophosts.gcpause`)."""
        share = gcpause.Share()
        try:
            await self._batch(scope, receive, send, share)
        finally:
            share.give_back()

    async def _batch(self, scope: Scope, receive: Receive, send: Send, share: Share) -> None:
        started = perf_counter()
        body = b""
        events: list[Event] = []
        cuts: list[int] = []  # where each slice of a large batch starts
        try:
            key = scan(scope, self.max_body, _KEY)
            if key is not None:
                return await self._keyed(scope, receive, send, started, key, share)
            body = await read_body(receive, self.max_body)
            events = await self._decode(scope, body, cuts, share)
            sync = self.sync
            if sync is not None and len(body) <= AT_ONCE_BYTES:
                added = sync.add_now(events)  # at most about 43,000 host counts
            else:
                added = await self.store.add(events)  # a large batch: summed in slices
        except _ANSWERED as exc:
            await self._fail(send, started, body, exc, len(events))
            return await _drop(events, cuts)
        metrics = self.metrics
        metrics.accepted += added.accepted
        metrics.expired += added.expired
        metrics.host_counts += added.host_counts  # the store sums them anyway
        payload = {"status": "ok", "accepted": added.accepted, "expired": added.expired}
        await self._answer(send, started, 200, payload, body)
        return await _drop(events, cuts)

    async def _decode(
        self, scope: Scope, body: bytes, cuts: list[int], share: Share
    ) -> list[Event]:
        """The events of a batch; a large one a slice at a time, the loop free between,
        noting in ``cuts`` where each slice starts, the collector held (``share``)."""
        ndjson = _is_ndjson(scope)
        if len(body) <= AT_ONCE_BYTES:
            return self.decoder.many(body, ndjson)
        share.take()
        events: list[Event] = []
        try:
            for part in self.decoder.slices(body, ndjson):
                cuts.append(len(events))
                events.extend(part)
                await asyncio.sleep(0)
        except EventError:
            await _drop(events, cuts)
            cuts.clear()  # nothing left for the caller to let go of
            raise
        return events

    async def _keyed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        raw: bytes,
        share: Share | None = None,
    ) -> None:
        """Either route, with an ``Idempotency-Key``: the key is in flight from now until
        the answer, the body's arrival included, and the store keeps the outcome
        with the counts (see :mod:`tophosts.idempotency`)."""
        body = b""
        events: list[Event] = []
        cuts: list[int] = []
        key = ""
        store = self.store
        try:
            key = idempotency.check(raw)
            digest = idempotency.digest(raw)
            try:
                store.begin(digest)
            except KeyInFlight:
                await read_body(receive, self.max_body)  # keeps the connection in step
                raise
            try:
                body = await read_body(receive, self.max_body, partial(store.claim, digest))
                keyed = (digest, idempotency.fingerprint(self.path, body))
                sync = self.sync
                if self.batch:
                    assert share is not None  # _many passes its own
                    events = await self._decode(scope, body, cuts, share)
                    if len(events) > idempotency.MAX_EVENTS:
                        raise idempotency.too_many_events(len(events))
                    if sync is not None and len(body) <= AT_ONCE_BYTES:
                        added = sync.add_now(events, keyed)
                    else:
                        added = await store.add(events, keyed)
                else:
                    ts, counts = self.decoder.one(body)
                    events = [(ts, counts)]
                    if sync is not None:
                        # The host counts are summed here, as on the way without a key.
                        total = sum(counts.values())
                        added = sync.add_one_now(ts, counts, total, keyed)
                        if added.accepted and not added.replayed:
                            self.metrics.host_counts += total
                    else:
                        added = await store.add(events, keyed)
            finally:
                store.end(digest)
        except _ANSWERED as exc:
            await self._fail(send, started, body, exc, len(events), key)
            return await _drop(events, cuts)
        metrics = self.metrics
        replayed = added.replayed
        if replayed:
            metrics.replays += 1
        else:
            metrics.accepted += added.accepted
            metrics.expired += added.expired
            metrics.host_counts += added.host_counts
        if self.batch:
            payload = {"status": "ok", "accepted": added.accepted, "expired": added.expired}
            headers = _REPLAYED if replayed else None
            await self._answer(send, started, 200, payload, body, None, headers)
            return await _drop(events, cuts)
        # POST /counter: one of two bodies, as without a key.
        if added.accepted:
            await send(_OK_REPLAYED_START if replayed else _OK_START)
            await send(_OK)
            out = len(_OK_BODY)
        else:
            await send(_EXPIRED_REPLAYED_START if replayed else _EXPIRED_START)
            await send(_EXPIRED)
            out = len(_EXPIRED_BODY)
        seconds = perf_counter() - started
        metrics.request("/counter", 200, seconds)
        if logs.wanted(200):
            logs.request("POST", "/counter", 200, seconds, len(body), out)
        return None

    async def _fail(
        self,
        send: Send,
        started: float,
        body: bytes,
        exc: Exception,
        events: int = 0,
        key: str = "",
    ) -> None:
        """Answer an ingest failure the client can act on (ClientGone: nobody to answer).
        ``key``: the request's Idempotency-Key, if it has a valid one."""
        if isinstance(exc, RepeatedHeader):
            exc = idempotency.repeated()
        if isinstance(exc, KeyRefused):
            self.metrics.conflict(exc.reason)
            message = idempotency.message(exc, key)
            headers = _RETRY if isinstance(exc, KeyInFlight) else None
            await self._answer(
                send, started, exc.status, {"error": message}, body, message, headers
            )
        elif isinstance(exc, EventError):
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
            # Not a 503: a retry without a key could count the events twice.
            if key:
                advice = (
                    "; retry with the same Idempotency-Key to learn the true outcome: "
                    "the first outcome again if they were, a fresh apply if they were not"
                )
            else:
                advice = (
                    "; a retry without a key may count them twice: send each request with "
                    "an Idempotency-Key, and retry with the same key to learn the outcome"
                )
            message = f"the store did not confirm the write: {exc}{advice}"
            await self._answer(send, started, 504, {"error": message}, body, message)

    async def _answer(
        self,
        send: Send,
        started: float,
        status: int,
        payload: Any,
        body: bytes,
        error: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        out = await send_json(send, status, payload, headers)
        seconds = perf_counter() - started
        self.metrics.request(self.route, status, seconds)
        if logs.wanted(status):
            logs.request("POST", self.route, status, seconds, len(body), out, error)
