"""Prometheus metrics.

The request path only bumps plain integers, which costs tens of nanoseconds.
Events are folded into prometheus-client counters when ``/metrics`` is scraped
(and every second under ``--workers``, where each worker writes to the
client's multiprocess directory and a scrape sums them all). The per-request
figures (requests by route and status, and their durations) are served by a
custom :class:`RequestCollector` straight from those integers: a histogram fed
one observation at a time costs 1.6 us per request, and prometheus-client has
no public way to add many observations at once.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tophosts import __version__, background
from tophosts.idempotency import REASONS
from tophosts.store import Sizes

BUCKETS: Sequence[float] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_REQUESTS = "tophosts_http_requests"
_DURATION = "tophosts_http_request_duration_seconds"
_FILE_PREFIX = "tophosts_requests_"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class RequestFigures(msgspec.Struct):
    """One process's per-request figures since it started: cumulative, never reset."""

    counts: dict[str, dict[int, int]] = msgspec.field(default_factory=dict)
    """route -> status -> requests"""
    buckets: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """route -> requests per duration bucket (not cumulative; the last is +Inf)"""
    sums: dict[str, float] = msgspec.field(default_factory=dict)
    """route -> seconds"""
    created: dict[str, float] = msgspec.field(default_factory=dict)
    """route -> when its first request was counted (Unix seconds)"""

    def add(self, other: RequestFigures) -> None:
        for route, statuses in other.counts.items():
            mine = self.counts.setdefault(route, {})
            for status, n in statuses.items():
                mine[status] = mine.get(status, 0) + n
        for route, buckets in other.buckets.items():
            mine_buckets = self.buckets.setdefault(route, [0] * len(buckets))
            for i, n in enumerate(buckets):
                mine_buckets[i] += n
            self.sums[route] = self.sums.get(route, 0.0) + other.sums.get(route, 0.0)
        for route, created in other.created.items():
            self.created[route] = min(created, self.created.get(route, created))


_figures_encoder = msgspec.msgpack.Encoder()
_figures_decoder = msgspec.msgpack.Decoder(RequestFigures)


class RequestCollector(Collector):
    """Requests by route and status, and their duration histogram, from plain ints.

    With a multiprocess directory, each worker saves its own figures there
    (:meth:`save`) and a scrape of any worker sums every worker's file, the
    way prometheus-client's multiprocess mode treats its own counters: the
    figures of a worker that has exited still count.
    """

    def __init__(self, directory: str | None = None) -> None:
        self.figures = RequestFigures()
        self._directory = Path(directory) if directory else None

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request; cheap enough for the ingest hot path."""
        figures = self.figures
        statuses = figures.counts.get(route)
        if statuses is None:
            statuses = figures.counts[route] = {}
            figures.buckets[route] = [0] * (len(BUCKETS) + 1)
            figures.sums[route] = 0.0
            figures.created[route] = time.time()
        statuses[status] = statuses.get(status, 0) + 1
        figures.buckets[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        figures.sums[route] += seconds

    def save(self) -> None:
        """Write this process's figures for the other workers' scrapes (atomically)."""
        if self._directory is None:
            return
        path = self._directory / f"{_FILE_PREFIX}{os.getpid()}.msgpack"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_figures_encoder.encode(self.figures))
        os.replace(tmp, path)

    def _all(self) -> RequestFigures:
        if self._directory is None:
            return self.figures
        self.save()
        total = RequestFigures()
        for path in self._directory.glob(f"{_FILE_PREFIX}*.msgpack"):
            with contextlib.suppress(OSError, msgspec.DecodeError):
                total.add(_figures_decoder.decode(path.read_bytes()))
        return total

    def collect(self) -> Iterable[Metric]:
        figures = self._all()
        requests = CounterMetricFamily(
            _REQUESTS, "HTTP requests, by route and status.", labels=["route", "status"]
        )
        duration = HistogramMetricFamily(
            _DURATION, "Time from request to response, by route.", labels=["route"]
        )
        bounds = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
        for route, statuses in sorted(figures.counts.items()):
            # Under --workers, prometheus-client's own counters carry no _created
            # either: no one creation time stands for several processes.
            created = figures.created.get(route) if self._directory is None else None
            for status, n in sorted(statuses.items()):
                requests.add_metric([route, str(status)], n, created=created)
            cumulative, running = [], 0
            for bound, n in zip(bounds, figures.buckets[route], strict=True):
                running += n
                cumulative.append((bound, running))
            duration.add_metric([route], cumulative, figures.sums[route])
            if created is not None:
                duration.add_sample(_DURATION + "_created", {"route": route}, created)
        yield requests
        yield duration


class Metrics:
    def __init__(self, store_kind: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        directory = multiprocess_dir()
        self.multiprocess = directory is not None
        r = self.registry
        self._events = Counter(
            "tophosts_events", "Events received, by result.", ["result"], registry=r
        )
        self._host_counts = Counter(
            "tophosts_host_counts", "Sum of the request counts of accepted events.", registry=r
        )
        self.requests = RequestCollector(directory)
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
        self._replays = Counter(
            "tophosts_idempotent_replays",
            "Requests answered with the outcome kept for their Idempotency-Key.",
            registry=r,
        )
        self._conflicts = Counter(
            "tophosts_idempotency_conflicts",
            "Requests with an Idempotency-Key refused for the key's sake, by reason.",
            ["reason"],
            registry=r,
        )
        self._keys = Gauge(
            "tophosts_idempotency_keys", "Idempotency keys kept by the store.", registry=r,
            multiprocess_mode=mode,
        )  # fmt: skip
        for result in ("accepted", "expired", "rejected"):
            self._events.labels(result)
        for reason in REASONS:
            self._conflicts.labels(reason)
        if not self.multiprocess:
            ProcessCollector(registry=r)
            r.register(self.requests)
        # Pending increments, bumped on the request path and folded in by flush().
        self.accepted = 0
        self.expired = 0
        self.rejected = 0
        self.host_counts = 0
        self.replays = 0
        self.conflicts = dict.fromkeys(REASONS, 0)
        # The request path calls this directly: one attribute lookup, no wrapper.
        self.request = self.requests.request

    def conflict(self, reason: str) -> None:
        """Count a request refused for its Idempotency-Key's sake (``reason``: one of
        :data:`tophosts.idempotency.REASONS`); a plain int, folded in by :meth:`flush`."""
        self.conflicts[reason] += 1

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
        if self.replays:
            self._replays.inc(self.replays)
            self.replays = 0
        for reason, n in self.conflicts.items():
            if n:
                self._conflicts.labels(reason).inc(n)
                self.conflicts[reason] = 0
        self.requests.save()

    @contextlib.asynccontextmanager
    async def flushing(self, interval: float = 1.0) -> AsyncIterator[None]:
        """Under multiprocess mode, flush every ``interval`` s so other workers' scrapes see us."""
        if not self.multiprocess:
            yield
            return
        async with background.every(interval, self.flush):
            yield

    def set_sizes(self, sizes: Sizes) -> None:
        self._tracked.labels("minute").set(sizes.minute_hosts)
        self._tracked.labels("hour").set(sizes.hour_hosts)
        self._windows.set(sizes.windows)
        self._keys.set(sizes.keys)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header.

        Covers this process, or every worker's metrics under multiprocess mode.
        """
        self.flush()
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(self.requests)
            ProcessCollector(registry=registry)
        encode, content_type = choose_encoder(accept or "")
        return encode(registry), content_type


class NullMetrics(Metrics):
    """:class:`Metrics` whose request-path update does nothing; for the bench's
    metrics-cost comparison (``create_app(metrics=NullMetrics(...))``)."""

    def __init__(self, store_kind: str) -> None:
        super().__init__(store_kind)
        self.request = _ignore


def _ignore(route: str, status: int, seconds: float) -> None:
    return None
