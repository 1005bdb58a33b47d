"""Prometheus metrics.

The request path only bumps plain integers, which costs tens of nanoseconds;
:meth:`Metrics.flush` folds them into prometheus-client metrics when ``/metrics``
is scraped (and every second under ``--workers``, where each worker writes to the
client's multiprocess directory and a scrape sums them all).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from tophosts import __version__
from tophosts.store import Sizes

BUCKETS: Sequence[float] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
ROUTES = frozenset(
    ("/counter", "/counters", "/stats", "/healthz", "/metrics", "/openapi.json", "/docs", "/")
)


def route_of(path: str) -> str:
    """The route label for ``path``; unknown paths share one label so cardinality stays bounded."""
    return path if path in ROUTES else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, store_kind: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        r = self.registry
        self._events = Counter(
            "tophosts_events", "Events received, by result.", ["result"], registry=r
        )
        self._host_counts = Counter(
            "tophosts_host_counts", "Sum of the request counts of accepted events.", registry=r
        )
        self._requests = Counter(
            "tophosts_http_requests", "HTTP requests, by route and status.", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self._duration = Histogram(
            "tophosts_http_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        mode: Final = "mostrecent"
        self._tracked = Gauge(
            "tophosts_tracked_hosts",
            "Tracked (host, window) pairs over the live windows of each size.",
            ["window"],
            registry=r,
            multiprocess_mode=mode,
        )
        self._windows = Gauge(
            "tophosts_windows_live", "Live windows (minute and hour) held.", registry=r,
            multiprocess_mode=mode,
        )  # fmt: skip
        info = Gauge(
            "tophosts_info", "Build and store of this server.", ["version", "store"], registry=r,
            multiprocess_mode=mode,
        )  # fmt: skip
        info.labels(__version__, store_kind).set(1)
        for result in ("accepted", "expired", "rejected"):
            self._events.labels(result)
        if not self.multiprocess:
            ProcessCollector(registry=r)
        # Pending increments, bumped on the request path and folded in by flush().
        self.accepted = 0
        self.expired = 0
        self.rejected = 0
        self.host_counts = 0
        self._pending: dict[tuple[str, int], int] = {}
        self._pending_buckets: dict[str, list[int]] = {}
        self._pending_sum: dict[str, float] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request; cheap enough for the ingest hot path."""
        key = (route, status)
        self._pending[key] = self._pending.get(key, 0) + 1
        buckets = self._pending_buckets.get(route)
        if buckets is None:
            buckets = self._pending_buckets[route] = [0] * (len(BUCKETS) + 1)
            self._pending_sum[route] = 0.0
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._pending_sum[route] += seconds

    def flush(self) -> None:
        """Fold the pending increments into the prometheus-client metrics."""
        for result in ("accepted", "expired", "rejected"):
            n = getattr(self, result)
            if n:
                self._events.labels(result).inc(n)
                setattr(self, result, 0)
        if self.host_counts:
            self._host_counts.inc(self.host_counts)
            self.host_counts = 0
        pending, self._pending = self._pending, {}
        for (route, status), n in pending.items():
            self._requests.labels(route, str(status)).inc(n)
        buckets, self._pending_buckets = self._pending_buckets, {}
        sums, self._pending_sum = self._pending_sum, {}
        for route, counts in buckets.items():
            child = self._duration.labels(route)
            # prometheus-client has no public way to add many observations at
            # once; its per-bucket values and sum are what observe() bumps.
            for value, n in zip(child._buckets, counts, strict=False):
                if n:
                    value.inc(n)
            child._sum.inc(sums[route])

    @contextlib.asynccontextmanager
    async def flushing(self, interval: float = 1.0) -> AsyncIterator[None]:
        """Under multiprocess mode, flush every ``interval`` s so other workers' scrapes see us."""
        if not self.multiprocess:
            yield
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.flush()

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.flush()

    def set_sizes(self, sizes: Sizes) -> None:
        self._tracked.labels("minute").set(sizes.minute_hosts)
        self._tracked.labels("hour").set(sizes.hour_hosts)
        self._windows.set(sizes.windows)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header.

        Covers this process, or every worker's metrics under multiprocess mode.
        """
        self.flush()
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            ProcessCollector(registry=registry)
        encode, content_type = choose_encoder(accept or "")
        return encode(registry), content_type
