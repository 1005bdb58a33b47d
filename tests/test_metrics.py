from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.support.clock import T0
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_ingest_and_request_metrics(client: TestClient, store_url: str) -> None:
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 3, "b.com": 2})
    client.post("/counter", json={"timestamp": PAST_HOUR - 10, "old.com": 1})
    client.post("/counter", json={"timestamp": PAST_MINUTE, "bad": True})
    client.post(
        "/counters",
        json=[
            {"timestamp": PAST_HOUR, "h.com": 10},
            {"timestamp": PAST_MINUTE, "a.com": 1},
            {"timestamp": PAST_HOUR - 10, "old.com": 100},  # expired: not in host counts
        ],
    )
    client.post("/counters", json=[{"timestamp": PAST_HOUR, "h.com": 1}, {"timestamp": 1}])
    client.get("/stats")
    client.get("/nope")
    m = scrape(client)
    assert m[("tophosts_events_total", (("result", "accepted"),))] == 3
    assert m[("tophosts_events_total", (("result", "expired"),))] == 2
    assert m[("tophosts_events_total", (("result", "rejected"),))] == 2
    assert m[("tophosts_host_counts_total", ())] == 16
    requests = "tophosts_http_requests_total"
    assert m[(requests, (("route", "/counter"), ("status", "200")))] == 2
    assert m[(requests, (("route", "/counter"), ("status", "400")))] == 1
    assert m[(requests, (("route", "/counters"), ("status", "200")))] == 1
    assert m[(requests, (("route", "/counters"), ("status", "400")))] == 1
    assert m[(requests, (("route", "/stats"), ("status", "200")))] == 1
    assert m[(requests, (("route", "other"), ("status", "404")))] == 1
    duration = "tophosts_http_request_duration_seconds"
    assert m[(duration + "_count", (("route", "/counter"),))] == 3
    assert m[(duration + "_bucket", (("le", "+Inf"), ("route", "/counters")))] == 2
    assert m[(duration + "_sum", (("route", "/counter"),))] > 0
    # The minute of the events, T0's hour (holding it) and the past hour.
    assert m[("tophosts_tracked_hosts", (("window", "minute"),))] == 2
    assert m[("tophosts_tracked_hosts", (("window", "hour"),))] == 3
    assert m[("tophosts_windows_live", ())] == 3
    kind = store_url.partition(":")[0]
    assert m[("tophosts_info", (("store", kind), ("version", "0.1.0")))] == 1
    assert m[("process_resident_memory_bytes", ())] > 0


def test_openmetrics_is_served_when_asked_for(client: TestClient) -> None:
    response = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_scrapes_accumulate_and_count_themselves(client: TestClient) -> None:
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1})
    first = scrape(client)
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1})
    second = scrape(client)
    accepted = ("tophosts_events_total", (("result", "accepted"),))
    assert (first[accepted], second[accepted]) == (1, 2)
    scraped = ("tophosts_http_requests_total", (("route", "/metrics"), ("status", "200")))
    assert second[scraped] == 1


def test_idempotency_metrics(client: TestClient) -> None:
    event = {"timestamp": PAST_MINUTE, "a.com": 1}
    before = scrape(client)
    assert before[("tophosts_idempotency_keys", ())] == 0
    for reason in ("fingerprint", "in_flight", "full"):
        assert before[("tophosts_idempotency_conflicts_total", (("reason", reason),))] == 0
    assert before[("tophosts_idempotent_replays_total", ())] == 0
    for _ in range(3):
        client.post("/counter", json=event, headers={"idempotency-key": "k"})
    client.post("/counter", json={**event, "a.com": 2}, headers={"idempotency-key": "k"})
    client.post("/counters", json=[event], headers={"idempotency-key": "k2"})
    m = scrape(client)
    assert m[("tophosts_idempotency_keys", ())] == 2
    assert m[("tophosts_idempotent_replays_total", ())] == 2
    assert m[("tophosts_idempotency_conflicts_total", (("reason", "fingerprint"),))] == 1
    # A replay is not counted again as events received.
    assert m[("tophosts_events_total", (("result", "accepted"),))] == 2
    assert m[("tophosts_host_counts_total", ())] == 2
