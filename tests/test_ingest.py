"""POST /counter and /counters: bodies, content types, batches and their refusals, in process."""

from __future__ import annotations

import msgspec
import pytest
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0, FakeClock
from tests.support.http import assert_error, top
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


def test_post_counter_then_stats(client: TestClient) -> None:
    response = client.post("/counter", json={"timestamp": PAST_MINUTE + 3, "a.com": 2, "b.com": 5})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    client.post("/counter", json={"timestamp": PAST_MINUTE + 50, "a.com": 4})
    client.post("/counter", json={"timestamp": PAST_HOUR + 10, "h.com": 1})
    assert top(client) == {"a.com": 6, "b.com": 5}
    assert top(client, "?stats_type=minute") == {"a.com": 6, "b.com": 5}
    assert top(client, "?stats_type=hour") == {"h.com": 1}


def test_stats_body_is_ordered_by_count_then_host(client: TestClient) -> None:
    client.post("/counter", json={"timestamp": PAST_MINUTE, "b": 2, "c": 9, "a": 2, "d": 1})
    assert client.get("/stats").text == '{"top_hosts":{"c":9,"a":2,"b":2,"d":1}}'


def test_form_encoded_bodies_are_read_as_json(client: TestClient) -> None:
    # What `curl -d '{...}'` sends.
    body = msgspec.json.encode({"timestamp": PAST_MINUTE, "curl.com": 1})
    response = client.post(
        "/counter", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.json() == {"status": "ok"}
    assert top(client) == {"curl.com": 1}


def test_expired_events_answer_expired_and_are_not_stored(client: TestClient) -> None:
    response = client.post("/counter", json={"timestamp": PAST_HOUR - 1, "old.com": 1})
    assert response.status_code == 200
    assert response.json() == {"status": "expired"}
    assert top(client, "?stats_type=hour") == {}


def test_events_too_far_ahead_are_refused_and_name_the_clock(make_client: MakeClient) -> None:
    client = make_client(max_skew=60)
    body = assert_error(
        client.post("/counter", json={"timestamp": T0 + 61, "f.com": 1}),
        400,
        str(T0 + 61),
        str(T0),
        "at most 60 s",
    )
    assert "index" not in body
    assert client.post("/counter", json={"timestamp": T0 + 60, "f.com": 1}).status_code == 200


def test_future_events_within_the_skew_count_once_their_window_comes(
    client: TestClient, clock: FakeClock
) -> None:
    client.post("/counter", json={"timestamp": T0 + 200, "f.com": 3})
    assert top(client) == {}
    clock.advance(260)  # T0 + 200 is 22:16:40; at 22:17:40 its minute is the past one
    assert top(client) == {"f.com": 3}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["empty"]),
        (b"{", ["not valid UTF-8 JSON"]),
        (b'{"timestamp": 1, "\xff\xfe": 1}', ["not valid UTF-8 JSON"]),
        (b"[" * 100_000, ["nests too deeply"]),
        (b'{"timestamp": 1, "a": true}', ['host "a"', "boolean"]),
        (b'{"timestamp": 1, "a": 2.0}', ['host "a"', "2.0"]),
        (b'{"a": 1}', ["timestamp"]),
        (b'{"timestamp": 1}', ["at least one host"]),
    ],
)
def test_invalid_events_get_400_json_and_change_nothing(
    client: TestClient, body: bytes, words: list[str]
) -> None:
    client.post("/counter", json={"timestamp": PAST_MINUTE, "keep.com": 1})
    assert_error(client.post("/counter", content=body), 400, *words)
    assert top(client) == {"keep.com": 1}


def test_max_hosts_per_event(make_client: MakeClient) -> None:
    client = make_client(max_hosts=3)
    ok = {"timestamp": PAST_MINUTE, "a": 1, "b": 1, "c": 1}
    assert client.post("/counter", json=ok).status_code == 200
    assert_error(client.post("/counter", json={**ok, "d": 1}), 400, "4 hosts", "at most 3")


def test_post_counters_json_array(client: TestClient) -> None:
    batch = [
        {"timestamp": PAST_MINUTE, "a.com": 1},
        {"timestamp": PAST_MINUTE + 1, "a.com": 2, "b.com": 1},
        {"timestamp": PAST_HOUR - 5, "old.com": 9},
        {"timestamp": PAST_HOUR, "h.com": 4},
    ]
    response = client.post("/counters", json=batch)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "accepted": 3, "expired": 1}
    assert top(client) == {"a.com": 3, "b.com": 1}
    assert top(client, "?stats_type=hour") == {"h.com": 4}


def test_post_counters_ndjson(client: TestClient) -> None:
    body = b'{"timestamp": %d, "a.com": 1}\n{"timestamp": %d, "b.com": 2}\n' % (
        PAST_MINUTE,
        PAST_MINUTE,
    )
    response = client.post(
        "/counters", content=body, headers={"content-type": "application/x-ndjson; charset=utf-8"}
    )
    assert response.json() == {"status": "ok", "accepted": 2, "expired": 0}
    assert top(client) == {"b.com": 2, "a.com": 1}


def test_an_empty_array_accepts_nothing(client: TestClient) -> None:
    assert client.post("/counters", json=[]).json() == {"status": "ok", "accepted": 0, "expired": 0}


@pytest.mark.parametrize(
    ("batch", "index", "word"),
    [
        ([{"timestamp": PAST_MINUTE, "a": 1}, {"timestamp": PAST_MINUTE, "b": "x"}], 1, '"b"'),
        ([{"timestamp": PAST_MINUTE}, {"timestamp": PAST_MINUTE, "b": 1}], 0, "host"),
        ([{"timestamp": PAST_MINUTE, "a": 1}, 7], 1, "JSON object"),
        ([{"timestamp": PAST_MINUTE, "a": 1}, {"timestamp": T0 + 10_000, "b": 1}], 1, "ahead"),
    ],
)
def test_a_bad_event_fails_the_whole_batch_with_its_index(
    client: TestClient, batch: list[object], index: int, word: str
) -> None:
    body = assert_error(client.post("/counters", json=batch), 400, word)
    assert body["index"] == index
    assert top(client) == {}


def test_a_batch_must_be_an_array(client: TestClient) -> None:
    body = assert_error(
        client.post("/counters", json={"timestamp": PAST_MINUTE, "a": 1}), 400, "JSON array"
    )
    assert "index" not in body


def test_bodies_over_max_body_get_413(make_client: MakeClient) -> None:
    client = make_client(max_body=100)
    event = {"timestamp": PAST_MINUTE, "a": 1}
    assert client.post("/counter", json=event).status_code == 200
    big = {"timestamp": PAST_MINUTE, "x" * 200: 1}
    assert_error(client.post("/counter", json=big), 413, "100 bytes")
    assert_error(client.post("/counters", json=[big]), 413, "--max-body")
    assert top(client) == {"a": 1}


def test_a_batch_of_one_names_its_event(client: TestClient) -> None:
    ahead = [{"timestamp": T0 + 100_000, "a": 1}]
    body = assert_error(client.post("/counters", json=ahead), 400, "--max-skew")
    assert body["index"] == 0
    body = assert_error(client.post("/counter", json=ahead[0]), 400, "--max-skew")
    assert "index" not in body
