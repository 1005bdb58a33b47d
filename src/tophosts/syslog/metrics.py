"""The receiver's metrics: a prometheus-client ``Collector`` over the listeners' tallies.

Nothing is bumped in prometheus-client on the receiving path: the collector
reads the plain integers of each :class:`~tophosts.syslog.counts.Tally` (and
the kernel's drop counts) when ``/metrics`` is scraped. Under ``--workers``,
where a scrape reads prometheus-client's multiprocess files instead of any
registry, :class:`Mirror` copies the same figures into multiprocess-backed
metrics about once a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tophosts.syslog import drops
from tophosts.syslog.counts import RESULTS, Tally

_HELP = {
    "lines": "Syslog lines received, by listener and result.",
    "bad_lines": "Syslog lines refused or unparsed, by listener and reason.",
    "connections_closed": "TCP connections the receiver closed, by listener and reason.",
    "dropped": "Datagrams the kernel dropped on a full receive buffer, by listener.",
    "connections": "Open TCP connections, by listener.",
    "receive_buffer": "Receive buffer the kernel granted a UDP listener, in bytes.",
}


def figures(tallies: Sequence[Tally]) -> Iterator[tuple[str, str, tuple[str, ...], float]]:
    """``(name, kind, labels, value)`` for every figure of ``tallies``."""
    inodes = {i for t in tallies for i in t.drops_of}
    dropped = drops.read(inodes) if inodes else {}
    for t in tallies:
        for result in RESULTS:
            yield "lines", "counter", (t.name, result), t.lines[result]
        for reason, n in t.reasons.items():
            yield "bad_lines", "counter", (t.name, reason), n
        for reason, n in t.closed.items():
            yield "connections_closed", "counter", (t.name, reason), n
        if t.drops_of:
            yield "dropped", "counter", (t.name,), sum(dropped.get(i, 0) for i in t.drops_of)
            yield "receive_buffer", "gauge", (t.name,), t.rcvbuf
        else:
            yield "connections", "gauge", (t.name,), t.connections


_LABELS = {
    "lines": ("listener", "result"),
    "bad_lines": ("listener", "reason"),
    "connections_closed": ("listener", "reason"),
    "dropped": ("listener",),
    "connections": ("listener",),
    "receive_buffer": ("listener",),
}


class SyslogCollector(Collector):
    def __init__(self, tallies: Sequence[Tally]) -> None:
        self.tallies = tallies

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, kind, labels, value in figures(self.tallies):
            family = families.get(name)
            if family is None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = cls(
                    "tophosts_syslog_" + name + ("_bytes" if name == "receive_buffer" else ""),
                    _HELP[name],
                    labels=_LABELS[name],
                )
            family.add_metric(list(labels), value)
        return list(families.values())


class Mirror:
    """The same figures in multiprocess-backed metrics, for ``--workers``."""

    def __init__(self, tallies: Sequence[Tally]) -> None:
        self.tallies = tallies
        # Connections add up over the workers; a receive buffer is each worker's own.
        modes: dict[str, Literal["livesum", "livemax"]] = {
            "connections": "livesum",
            "receive_buffer": "livemax",
        }
        self._metrics: dict[str, Counter | Gauge] = {
            name: (
                Counter("tophosts_syslog_" + name, _HELP[name], _LABELS[name], registry=None)
                if name in ("lines", "bad_lines", "connections_closed", "dropped")
                else Gauge(
                    "tophosts_syslog_" + name + ("_bytes" if name == "receive_buffer" else ""),
                    _HELP[name],
                    _LABELS[name],
                    registry=None,
                    multiprocess_mode=modes[name],
                )
            )
            for name in _LABELS
        }
        self._sent: dict[tuple[str, tuple[str, ...]], float] = {}

    def update(self) -> None:
        for name, _, labels, value in figures(self.tallies):
            metric = self._metrics[name]
            if isinstance(metric, Gauge):
                metric.labels(*labels).set(value)
                continue
            key = (name, labels)
            more = value - self._sent.get(key, 0)
            if more > 0:
                metric.labels(*labels).inc(more)
                self._sent[key] = value
