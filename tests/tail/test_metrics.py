"""--metrics-port: the shipper's Prometheus metrics over HTTP."""

from __future__ import annotations

import httpx

from tophosts.tail.metrics import Metrics


def test_metrics_are_served_with_every_result_from_zero() -> None:
    metrics = Metrics()
    port = metrics.serve("127.0.0.1", 0)
    metrics.lines.labels("shipped").inc(5)
    metrics.batches.labels("replayed").inc()
    metrics.set_lags({"/var/log/a.log": 123})
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'tophosts_tail_lines_total{result="shipped"} 5.0' in text
    assert 'tophosts_tail_lines_total{result="bad"} 0.0' in text
    assert 'tophosts_tail_lines_total{result="refused"} 0.0' in text
    assert 'tophosts_tail_batches_total{status="replayed"} 1.0' in text
    assert 'tophosts_tail_lag_bytes{path="/var/log/a.log"} 123.0' in text
    assert "tophosts_tail_last_ack_timestamp_seconds 0.0" in text
    assert "process_resident_memory_bytes" in text
