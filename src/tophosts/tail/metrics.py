"""``--metrics-port``: Prometheus metrics of the shipper, served by prometheus-client.

- ``tophosts_tail_lines_total{result="shipped|bad|refused"}``: lines the server
  acknowledged, lines that are not in the format (or name a host that cannot be
  sent), and lines the server refused (400) and that were skipped;
- ``tophosts_tail_batches_total{status}``: answers to ``POST /counters``, by
  status; ``replayed`` is a 200 that was a replay, ``error`` no answer at all;
- ``tophosts_tail_lag_bytes{path}``: bytes of each file not acknowledged yet;
- ``tophosts_tail_last_ack_timestamp_seconds``: when the last batch was acknowledged;
- ``process_*``: the shipper process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RESULTS = ("shipped", "bad", "refused")


class _Lag(Collector):
    def __init__(self) -> None:
        self.lags: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tophosts_tail_lag_bytes", "bytes of the file not acknowledged yet", labels=["path"]
        )
        for path, lag in sorted(self.lags.items()):
            family.add_metric([path], lag)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lines = Counter(
            "tophosts_tail_lines",
            "log lines by result: shipped (acknowledged), bad (not in the format), refused (400)",
            ["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.lines.labels(result)
        self.batches = Counter(
            "tophosts_tail_batches",
            "answers to POST /counters by status (replayed: a replayed 200; error: no answer)",
            ["status"],
            registry=self.registry,
        )
        self.last_ack = Gauge(
            "tophosts_tail_last_ack_timestamp_seconds",
            "Unix time of the last acknowledged batch",
            registry=self.registry,
        )
        self._lag = _Lag()
        self.registry.register(self._lag)
        ProcessCollector(registry=self.registry)

    def set_lags(self, lags: dict[str, int]) -> None:
        """Replace the lags at once (the scrape runs in another thread)."""
        self._lag.lags = lags

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the port bound."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
