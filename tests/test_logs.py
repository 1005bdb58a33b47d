from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from tests.support.clock import T0
from tests.support.servers import Server
from tophosts.logs import JsonFormatter
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tophosts.access"]


def test_one_line_per_request_with_method_path_status_duration_and_sizes(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "tophosts.access"):
        client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1})
        client.get("/stats?stats_type=hour")
    first, second = access_records(caplog)
    assert first.getMessage().startswith("POST /counter 200 ")
    assert "in=34B out=15B" in first.getMessage()
    assert second.getMessage().startswith("GET /stats 200 ")
    fields = first.__dict__
    assert (fields["method"], fields["path"], fields["status"]) == ("POST", "/counter", 200)
    assert fields["duration_ms"] >= 0


def test_refused_ingest_logs_the_reason_not_the_body(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [{"timestamp": PAST_MINUTE, "secret.example": 1}, {"timestamp": PAST_MINUTE}]
    with caplog.at_level(logging.INFO, "tophosts.access"):
        client.post("/counters", json=batch)
    (record,) = access_records(caplog)
    assert record.getMessage().startswith("POST /counters 400 ")
    assert "at least one host" in record.getMessage()
    assert "secret.example" not in caplog.text


def test_no_request_lines_above_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1})
    assert access_records(caplog) == []


def test_json_lines_carry_the_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "tophosts.access", "levelname": "INFO", "msg": "GET /stats 200", "status": 200}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET /stats 200"
    assert line["status"] == 200
    assert line["level"] == "info"
    assert line["time"].endswith("+00:00")


def test_a_real_server_logs_start_up_and_json_request_lines() -> None:
    srv = Server("--log-format", "json", "--top", "7")
    try:
        assert srv.url  # ready: /healthz answered
    finally:
        code, out = srv.stop()
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    start = next(line for line in lines if "serving on" in line["message"])
    for part in (
        f":{srv.port}",
        "store=memory",
        "workers=1",
        "top=7",
        "max-skew=300s",
        "snapshot=off",
        "retention=24h",
        "history-top=100",
    ):
        assert part in start["message"]
    health = [line for line in lines if line.get("path") == "/healthz"]
    assert health
    assert health[-1]["status"] == 200
