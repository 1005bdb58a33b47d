"""Posting a batch to ``/counters``, and what each answer of the server means.

One keep-alive connection through the standard library's ``http.client``: the
shipper sends one batch at a time and waits for its answer (the state file must
record it before the next batch), so an async or pooled client would buy
nothing, and the product keeps no HTTP client dependency (httpx is a test one).

:meth:`Sender.send` retries until the answer settles the batch:

- **200** (``Idempotent-Replayed: true`` or not): counted. :class:`Acked`.
- **503**, **502**, **500**, **429**, **409**, a network error, a timeout, or
  the server down: nothing is known to be applied; retried with the same key,
  after an exponential backoff with jitter (at least ``Retry-After``), for as
  long as it takes. The log file is the buffer, so nothing piles up in memory.
- **504**: the outcome is unknown; retried with the same key, which resolves it
  (a replay if it was applied, a fresh apply if not).
- **400** naming an event: :class:`Refused`; the caller leaves that event's
  lines out and sends the rest.
- **422**: the key was used for another body: :class:`Conflict`.
- **401** and any other answer: :class:`Fatal`, with one line saying what to do.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

import msgspec

log = logging.getLogger("tophosts.tail")

RETRIED = frozenset({409, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


class Client:
    """``POST <url>/counters`` with a bearer token and an ``Idempotency-Key``."""

    def __init__(self, url: str, token: str = "", timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path.rstrip("/") + "/counters"
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "User-Agent": "tophosts-tail"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def post(self, body: bytes, key: str) -> Reply:
        """One try; raises ``OSError`` or ``http.client.HTTPException`` if no answer came."""
        conn = self._connection()
        try:
            conn.request("POST", self.path, body, {**self.headers, "Idempotency-Key": key})
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclasses.dataclass(frozen=True)
class Acked:
    replayed: bool
    accepted: int
    expired: int


@dataclasses.dataclass(frozen=True)
class Refused:
    index: int
    message: str


@dataclasses.dataclass(frozen=True)
class Conflict:
    message: str


@dataclasses.dataclass(frozen=True)
class Fatal:
    message: str


@dataclasses.dataclass(frozen=True)
class Unfinished:
    """The shipper is stopping and its time to flush ran out with the batch unanswered."""


Outcome = Acked | Refused | Conflict | Fatal | Unfinished


class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of
    ``min(cap, base * 2**(n-1))``, and never less than the server's ``Retry-After``."""

    def __init__(self, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float = 0.0) -> float:
        ceiling: float = min(self.cap, self.base * 2.0 ** min(attempt - 1, 30))
        return max(retry_after, ceiling / 2 + self.rng.uniform(0, ceiling / 2))


class _Error(msgspec.Struct):
    error: str = ""
    index: int | None = None


def _error(body: bytes) -> _Error:
    try:
        return msgspec.json.decode(body, type=_Error)
    except (msgspec.DecodeError, RecursionError):
        return _Error(body[:200].decode("utf-8", "replace"))


class _Ok(msgspec.Struct):
    status: str
    accepted: int = 0
    expired: int = 0


def _retry_after(headers: dict[str, str]) -> float:
    try:
        seconds = float(headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
    return min(60.0, max(0.0, seconds))


class Sender:
    """Sends one batch until the server settles it (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        backoff: Backoff | None = None,
        stopping: threading.Event | None = None,
        stop_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_answer: Callable[[str], None] = lambda status: None,
        wait: Callable[[float], object] | None = None,
        nap: Callable[[float], object] = time.sleep,
    ) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.stopping = stopping or threading.Event()
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.on_answer = on_answer
        """Called with each answer's label ("200", "replayed", "503", "error", ...)."""
        self.wait = wait or self.stopping.wait
        """Sleeps, returning early when ``stopping`` is set."""
        self.nap = nap
        """Sleeps (while stopping)."""
        self._stop_deadline: float | None = None

    def _deadline(self) -> float | None:
        if self.stopping.is_set() and self._stop_deadline is None:
            self._stop_deadline = self.clock() + self.stop_timeout
        return self._stop_deadline

    def send(self, body: bytes, key: str) -> Outcome:
        attempt = 0
        while True:
            retry_after = 0.0
            try:
                reply = self.client.post(body, key)
            except (OSError, http.client.HTTPException) as exc:
                self.on_answer("error")
                problem = f"no answer from {self.client.url} ({_describe(exc)})"
            else:
                outcome = self._settle(reply, len(body))
                if outcome is not None:
                    return outcome
                retry_after = _retry_after(reply.headers)
                problem = f"{self.client.url} answered {reply.status}: {_error(reply.body).error}"
                if reply.status == 504:
                    problem += " (retrying with the same key resolves it)"
            attempt += 1
            delay = self.backoff.delay(attempt, retry_after)
            deadline = self._deadline()
            if deadline is not None:
                # Stopping: try again while there is time to flush, sooner if need be.
                left = deadline - self.clock()
                if left <= 0:
                    log.error("%s; stopping with the batch unacknowledged", problem)
                    return Unfinished()
                delay = min(delay, left)
            log.warning("%s; retry %d in %.1f s with the same key", problem, attempt, delay)
            self._sleep(delay)

    def _sleep(self, delay: float) -> None:
        """Wait ``delay`` before the next try; a stop cuts it short (to flush now), and once
        stopping, no wait runs past the time left to flush."""
        if not self.stopping.is_set():
            self.wait(delay)
            return
        deadline = self._deadline()
        assert deadline is not None
        self.nap(min(delay, max(0.0, deadline - self.clock())))

    def _settle(self, reply: Reply, size: int) -> Outcome | None:
        status = reply.status
        if status == 200:
            replayed = reply.headers.get("idempotent-replayed", "").lower() == "true"
            self.on_answer("replayed" if replayed else "200")
            try:
                ok = msgspec.json.decode(reply.body, type=_Ok)
            except (msgspec.DecodeError, RecursionError):
                ok = _Ok("")
            if ok.status != "ok":
                # Something answers 200 that is not tophosts (a proxy's page, another
                # service): taking it for an acknowledgement would lose the batch.
                return Fatal(
                    f"{self.client.url}{self.client.path} answered 200 without tophosts's "
                    f'{{"status": "ok", ...}} ({reply.body[:80]!r}); is --url a tophosts server?'
                )
            return Acked(replayed, ok.accepted, ok.expired)
        self.on_answer(str(status))
        if status in RETRIED:
            return None
        error = _error(reply.body)
        if status == 400 and error.index is not None:
            return Refused(error.index, error.error)
        if status == 422:
            return Conflict(error.error)
        if status == 401:
            return Fatal(
                f"{self.client.url} refused the ingest token (401: {error.error}); give the "
                "server's --ingest-token in the file of --ingest-token-file"
            )
        if status == 404:
            return Fatal(
                f"{self.client.url}{self.client.path} is not found (404); --url must be a "
                "tophosts server's base URL, such as http://tophosts:8080"
            )
        if status == 413:
            return Fatal(
                f"{self.client.url} refused a batch of {size} bytes as too large "
                f"(413: {error.error}); raise the server's --max-body, or lower --max-batch"
            )
        return Fatal(f"{self.client.url} answered {status}: {error.error or 'no reason given'}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
