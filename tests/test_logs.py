from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
import random
import re
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0, FakeClock
from tests.support.servers import Server
from tests.support.wait import until
from tophosts import logs
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.logs import JsonFormatter
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tophosts.access"]


# -- in process, before logs.configure(): records through logging ---------------------


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


def test_a_refusal_outside_the_fast_lane_is_logged_with_the_reason_its_body_gives(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(ingest_token="s3cret")
    with caplog.at_level(logging.INFO, "tophosts.access"):
        answers = [
            client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1}),
            client.get("/nope"),
            client.delete("/stats"),
        ]
    assert [a.status_code for a in answers] == [401, 404, 405]
    records = access_records(caplog)
    assert [r.__dict__["status"] for r in records] == [401, 404, 405]
    for record, answer in zip(records, answers, strict=True):
        assert record.__dict__["error"] == answer.json()["error"]
        assert record.getMessage().endswith(" error=" + answer.json()["error"])


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


# -- the server's access lines, queued and written in batches -------------------------


class CountingStream(io.StringIO):
    """A stream that counts its ``write()`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def configured() -> Iterator[None]:
    """Leave the root logger and the access lines as they were."""
    root = logging.getLogger()
    handlers, level, every = root.handlers[:], root.level, logs.every
    yield
    logs.flush()
    logs._lines, logs.every = None, every
    root.handlers[:] = handlers
    root.setLevel(level)


Request = tuple[str, str, int, float, int, int, "str | None"]


def some_requests(n: int, seed: int = 1) -> list[Request]:
    rng = random.Random(seed)
    out: list[Request] = []
    for i in range(n):
        status = rng.choice([200, 200, 200, 400, 404, 413, 429])
        error = None if status == 200 else f'refusal {i}: host "ü\\n,x" and "quotes"'
        path = rng.choice(["/counter", "/counters", "/stats", "/nope/ü %0A"])
        seconds = rng.random() * rng.choice([1e-4, 1e-2, 3])
        out.append(("POST", path, status, seconds, rng.randrange(10**7), rng.randrange(500), error))
    return out


def through_logging(fmt: str, requests: list[Request], created: list[float]) -> list[str]:
    """The lines the logging handler wrote for ``requests`` before lines were queued."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(logs.TEXT_FORMAT))
    for at, (method, path, status, seconds, size_in, size_out, error) in zip(
        created, requests, strict=True
    ):
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes_in": size_in,
            "bytes_out": size_out,
        }
        message = "%s %s %d %.2fms in=%dB out=%dB"
        args: tuple[object, ...] = (method, path, status, seconds * 1000, size_in, size_out)
        if error is not None:
            fields["error"] = error
            message, args = message + " error=%s", (*args, error)
        record = logging.LogRecord("tophosts.access", logging.INFO, "", 1, message, args, None)
        record.created, record.msecs = at, int((at - int(at)) * 1000) + 0.0
        record.__dict__.update(fields)
        handler.emit(record)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_queued_lines_are_the_text_and_json_the_handler_writes(fmt: str) -> None:
    requests = some_requests(3000)
    rng = random.Random(2)
    # Times across seconds and days, and just short of the next millisecond or second.
    created = [
        rng.choice([T0, 1_800_000_000, time.time()])
        + rng.random() * rng.choice([1, 1e-3, 3600, 86400])
        + rng.choice([0, 0.0009995, 0.9995, 0.99999996])
        for _ in requests
    ]
    stream = io.StringIO()
    lines = logs.AccessLines(logs.Handler(stream), fmt)
    lines.pending = [(at, *r) for at, r in zip(created, requests, strict=True)]
    lines.flush()
    assert stream.getvalue().splitlines() == through_logging(fmt, requests, created)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_burst_is_written_whole_and_in_order_in_a_few_writes(fmt: str, configured: None) -> None:
    # Through logging, each line was a record and a write() of its own.
    stream = CountingStream()
    logs.configure("info", fmt, stream)
    requests = some_requests(5000)

    async def burst() -> None:
        for i, request in enumerate(requests):
            logs.request(*request)
            if i % 100 == 0:
                await asyncio.sleep(0)  # the loop turns between requests
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < len(requests) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(burst())
    written = stream.getvalue().splitlines()
    assert len(written) == len(requests)
    for line, (method, path, status, _, size_in, size_out, error) in zip(
        written, requests, strict=True
    ):
        if fmt == "json":
            fields = json.loads(line)
            got = (fields["path"], fields["status"], fields["bytes_in"], fields.get("error"))
            assert got == (path, status, size_in, error)
        else:
            assert f" INFO tophosts.access: {method} {path} {status} " in line
            assert line.endswith(f"out={size_out}B" + ("" if error is None else f" error={error}"))
    assert stream.writes <= 10


def test_a_line_is_written_within_a_flush_interval_and_before_any_later_record(
    configured: None,
) -> None:
    stream = CountingStream()
    logs.configure("info", "text", stream)
    waited = []

    async def run() -> None:
        logs.request("POST", "/counter", 200, 0.0001, 45, 15)
        logs.request("POST", "/counter", 400, 0.0001, 3, 60, "bad body")
        started = time.monotonic()
        while "bad body" not in stream.getvalue():
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.005)
        waited.append(time.monotonic() - started)
        logs.request("POST", "/counters", 429, 0.0001, 10, 80, "too many hosts")
        logging.getLogger("tophosts").warning("something else")

    asyncio.run(run())
    assert waited[0] < 1.0  # FLUSH_SECONDS on a quiet machine
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "POST /counter 200 0.10ms in=45B out=15B",
        "POST /counter 400 0.10ms in=3B out=60B error=bad body",
        "POST /counters 429 0.10ms in=10B out=80B error=too many hosts",
        "something else",
    ]
    assert stream.writes <= 4  # two batches of access lines, then the warning


@pytest.mark.parametrize("queued", [True, False])
def test_a_line_break_or_escape_in_a_path_or_reason_stays_inside_its_line(
    queued: bool, configured: None
) -> None:
    stream = io.StringIO()
    if queued:
        logs.configure("info", "text", stream, access_log="all")
    else:  # before configure(): a logging record
        root = logging.getLogger()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
    app = create_app(Settings(), clock=FakeClock())
    with TestClient(app) as client:
        # %0A and %1B: the path reaches the app percent-decoded, a real LF and ESC.
        assert (
            client.get("/x%0AINFO%20tophosts.access:%20GET%20/forged%20200%1B[2J").status_code
            == 404
        )
    logs.flush()
    # Every line is a record of its own, and one of them the access line.
    lines = stream.getvalue().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) for line in lines)
    lines = [line for line in lines if line.split(" ", 4)[3] == "tophosts.access:"]
    assert len(lines) == 1
    assert (
        lines[0]
        .split(": ", 1)[1]
        .startswith("GET /x\\nINFO tophosts.access: GET /forged 200\\u001b[2J 404 ")
    )
    # Starlette's URL drops the line break from the path the message names; the ESC stays.
    assert "error=no route /xINFO tophosts.access: GET /forged 200\\u001b[2J; " in lines[0]


def test_without_a_running_loop_a_line_is_written_at_once(configured: None) -> None:
    stream = CountingStream()
    logs.configure("info", "json", stream)
    logs.request("GET", "/stats", 200, 0.002, 0, 30)
    assert json.loads(stream.getvalue())["message"] == "GET /stats 200 2.00ms in=0B out=30B"


def test_a_summary_line_counts_what_was_answered_below_400_since_the_last(
    configured: None,
) -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream, access_log="refused")
    counts: dict[str, dict[int, int]] = {"/counter": {200: 5, 429: 2}}
    summary = logs.Summary(counts)  # what was counted before is not summarized
    counts["/counter"][200] += 3
    counts["/counter"][400] = 7  # refused: each has its own line
    counts["/stats"] = {200: 3}
    counts["/dashboard"] = {304: 3}
    summary()
    summary()  # nothing new: no line
    counts["/stats"][200] += 1
    summary()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == "tophosts.access"
    assert first["answered"] == {"/counter 200": 3, "/dashboard 304": 3, "/stats 200": 3}
    assert list(first["answered"]) == ["/counter 200", "/dashboard 304", "/stats 200"]
    assert first["requests"] == 9
    assert first["message"].startswith("9 requests answered in ")
    assert first["message"].endswith("s (/counter 200: 3, /dashboard 304: 3, /stats 200: 3)")
    assert (second["answered"], second["requests"]) == ({"/stats 200": 1}, 1)
    assert second["message"].startswith("1 request answered in ")


def test_by_default_the_app_logs_refusals_and_a_summary_every_interval(
    configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "SUMMARY_SECONDS", 0.2)
    stream = io.StringIO()
    logs.configure("info", "text", stream, access_log="refused")
    app = create_app(Settings(), clock=FakeClock())
    with TestClient(app) as client:
        started = time.monotonic()
        for _ in range(3):
            client.post("/counter", json={"timestamp": PAST_MINUTE, "a.com": 1})
        client.post("/counter", json={"timestamp": PAST_MINUTE})
        client.get("/stats?stats_type=hour")
        until(lambda: " answered in " in stream.getvalue(), timeout=5)
        assert time.monotonic() - started >= 0.2
    lines = [
        line.split(": ", 1)[1]
        for line in stream.getvalue().splitlines()
        if " tophosts.access: " in line
    ]
    refusal, summary = lines
    assert refusal.startswith("POST /counter 400 ")
    assert "error=an event needs at least one host besides the timestamp; " in refusal
    assert summary.startswith("4 requests answered in 0.")
    assert summary.endswith("s (/counter 200: 3, /stats 200: 1)")


# -- a real server ----------------------------------------------------------------------


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
        "access-log=refused",
    ):
        assert part in start["message"]
    # The readiness probes were answered 200: no line each, counted in the summary
    # written at shutdown.
    assert not [line for line in lines if line.get("path") == "/healthz"]
    (summary,) = [line for line in lines if "answered" in line]
    assert summary["logger"] == "tophosts.access"
    assert summary["answered"] == {"/healthz 200": summary["requests"]}
    assert summary["requests"] >= 1


def burst(url: str, n: int) -> list[tuple[str, int, str | None]]:
    """``n`` requests, one at a time over one connection; (path, status, error) of each."""
    now = int(time.time())
    sent: list[tuple[str, int, str | None]] = []
    with httpx.Client(base_url=url) as client:
        for i in range(n):
            kind = i % 5
            if kind == 0:
                r = client.post("/counter", json={"timestamp": now - 30, f"h{i}.example": 1})
            elif kind == 1:
                r = client.post("/counter", json={"timestamp": now - 30})
            elif kind == 2:
                r = client.post("/counters", json=[{"timestamp": now - 30, "a": 1, "b": 2}] * 3)
            elif kind == 3:
                r = client.post("/counter", json={"timestamp": now - 30, "x": 1, "y": 1})
            else:
                r = client.get(f"/missing/{i}")
            error = r.json().get("error") if r.status_code >= 400 else None
            sent.append((r.request.url.path, r.status_code, error))
    return sent


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_real_server_writes_every_line_of_a_burst_in_order_and_the_refusals_reasons(
    fmt: str,
) -> None:
    # --max-tracked-hosts 3: the x/y event gets 429 once a and b are tracked.
    srv = Server("--log-format", fmt, "--max-tracked-hosts", "3", "--access-log", "all")
    sent = burst(srv.url, 500)
    srv.proc.send_signal(signal.SIGTERM)  # the last lines are written at exit
    code, out = srv.stop()
    assert code == 0
    statuses = {status for _, status, _ in sent}
    assert statuses == {200, 400, 404, 429}
    assert access_lines(out, fmt) == sent
    assert "Finished server process" in out.splitlines()[-1]


def access_lines(out: str, fmt: str) -> list[tuple[str, int, str | None]]:
    """(path, status, error) of each request's own access line in ``out``, but /healthz."""
    access: list[tuple[str, int, str | None]] = []
    for line in out.splitlines():
        if fmt == "json":
            fields = json.loads(line)
            if (
                fields["logger"] == "tophosts.access"
                and fields.get("path", "/healthz") != "/healthz"
            ):
                access.append((fields["path"], fields["status"], fields.get("error")))
        elif (
            " INFO tophosts.access: " in line
            and " /healthz " not in line
            and " answered " not in line
        ):
            message = line.split(" INFO tophosts.access: ", 1)[1]
            _, path, status, rest = message.split(" ", 3)
            error = rest.split(" error=", 1)[1] if " error=" in rest else None
            access.append((path, int(status), error))
    return access


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_by_default_a_real_server_logs_each_refusal_and_counts_the_rest_in_a_summary(
    fmt: str,
) -> None:
    srv = Server("--log-format", fmt, "--max-tracked-hosts", "3")
    sent = burst(srv.url, 500)
    srv.proc.send_signal(signal.SIGTERM)  # the summary is written at shutdown
    code, out = srv.stop()
    assert code == 0
    refused = [(p, s, e) for p, s, e in sent if s >= 400]
    assert {s for _, s, _ in refused} == {400, 404, 429}
    assert access_lines(out, fmt) == refused
    answered = collections.Counter(f"{p} {s}" for p, s, _ in sent if s < 400)
    assert set(answered) == {"/counter 200", "/counters 200"}
    (summary,) = [line for line in out.splitlines() if " answered in " in line]
    if fmt == "json":
        fields = json.loads(summary)
        answered["/healthz 200"] = fields["answered"]["/healthz 200"]
        assert fields["answered"] == answered
        assert fields["requests"] == sum(answered.values())
    else:
        # Most answered first, then by name.
        health = int(summary.split("/healthz 200: ", 1)[1].split(",")[0].rstrip(")"))
        answered["/healthz 200"] = health
        seconds = summary.split(" answered in ", 1)[1].split("s (", 1)[0]
        ranked = sorted(answered.items(), key=lambda item: (-item[1], item[0]))
        assert summary.endswith(
            f"INFO tophosts.access: {sum(answered.values())} requests answered in {seconds}s ("
            + ", ".join(f"{route}: {n}" for route, n in ranked)
            + ")"
        )
        assert 0 < float(seconds) < 60
    assert "Finished server process" in out.splitlines()[-1]


@pytest.mark.e2e
def test_the_refusal_of_a_body_over_max_body_is_logged_with_its_reason() -> None:
    srv = Server("--max-body", "100")
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        body = b'{"timestamp": 1, "a": 1}'.ljust(200)
        sock.sendall(
            b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    srv.proc.send_signal(signal.SIGTERM)
    _, out = srv.stop()
    assert "POST /counter 413 " in out
    assert "error=the request body is larger than 100 bytes (--max-body)" in out
