"""A stand-in for a tophosts server's ``POST /counters``, with issue 13's ``Idempotency-Key``
and faults on demand, for the shipper's in-process tests.

It answers as tophosts does (the bodies and statuses of the README) and keeps
issue 13's contract: the outcome of an applied request is remembered by key and
replayed (``Idempotent-Replayed: true``) for the same body, a key reused for
another body gets 422, and refusals are not remembered. The real server's
behaviour is covered by the tests against a real process; this one lets the
shipper's exactly-once logic be tested before, and without, the server's keys.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections import Counter, deque
from typing import Any

from tests.support.servers import free_port


class IngestDouble:
    """``POST /counters`` on a free port of 127.0.0.1, served from a thread.

    - ``counts``: host -> total applied; ``events``: (second, host) -> total.
    - ``requests``: every request as ``(key, body)``, in arrival order.
    - ``faults``: a queue of what the next requests meet, one each:
      ``("status", 503)`` answers 503 and applies nothing; ``("drop",)`` applies
      the request, then closes the connection without answering; ``("504",)``
      applies it, then answers 504.
    - ``refuse``: hosts whose events are refused with 400 (``ahead`` says whether
      the message is the server's skew message), naming the event's index.
    """

    def __init__(self, token: str = "") -> None:
        self.token = token
        self.counts: Counter[str] = Counter()
        self.events: Counter[tuple[int, str]] = Counter()
        self.requests: list[tuple[str, bytes]] = []
        self.faults: deque[tuple[Any, ...]] = deque()
        self.refuse: dict[str, bool] = {}
        self.keys: dict[str, tuple[str, bytes]] = {}
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key", "")
                auth = self.headers.get("Authorization", "")
                with double.lock:
                    double.requests.append((key, body))
                    answer = double._answer(self.path, key, auth, body)
                if answer is None:  # a reply lost on the way back
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, headers, data = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def totals(self) -> Counter[str]:
        """A copy of ``counts``, taken under the lock (the server thread writes it)."""
        with self.lock:
            return Counter(self.counts)

    def keys_sent(self) -> list[str]:
        with self.lock:
            return [key for key, _ in self.requests]

    def _answer(
        self, path: str, key: str, auth: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        if path != "/counters":
            return 404, {}, b'{"error": "unknown path"}'
        if self.token and auth != f"Bearer {self.token}":
            return 401, {"WWW-Authenticate": "Bearer"}, b'{"error": "missing or wrong token"}'
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault[0] == "status":
            return fault[1], {"Retry-After": "0"}, b'{"error": "the store is unavailable"}'
        fingerprint = hashlib.sha256(path.encode() + b"\0" + body).hexdigest()
        if key in self.keys:
            first, outcome = self.keys[key]
            if first != fingerprint:
                error = {"error": f"Idempotency-Key {key} was used for a different request"}
                return 422, {}, json.dumps(error).encode()
            return 200, {"Idempotent-Replayed": "true"}, outcome
        events = json.loads(body)
        for index, event in enumerate(events):
            for host in event:
                if host in self.refuse:
                    message = (
                        f"timestamp {event['timestamp']} is 86400 s ahead of the server clock "
                        "(1); at most 300 s ahead is accepted (--max-skew)"
                        if self.refuse[host]
                        else f"host name {host!r} is refused"
                    )
                    return 400, {}, json.dumps({"error": message, "index": index}).encode()
        for event in events:
            second = event.pop("timestamp")
            for host, n in event.items():
                self.counts[host] += n
                self.events[(second, host)] += n
        outcome = json.dumps({"status": "ok", "accepted": len(events), "expired": 0}).encode()
        if key:
            self.keys[key] = (fingerprint, outcome)
        if fault is not None and fault[0] == "drop":
            return None
        if fault is not None and fault[0] == "504":
            return 504, {}, b'{"error": "they may or may not have been counted"}'
        return 200, {}, outcome
