"""Hostile bodies: each gets a clear 4xx, and the counts stay exact afterwards."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support.clock import T0
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
TS = b"%d" % PAST_MINUTE

HOSTILE: dict[str, tuple[bytes, int, str]] = {
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, 400, "nests too deeply"),
    "deep nesting in a value": (
        b'{"timestamp": ' + TS + b', "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "nests too deeply",
    ),
    "duplicate host": (b'{"timestamp": ' + TS + b', "a": 1, "b": 1, "a": 5}', 400, '"a"'),
    "duplicate timestamp": (
        b'{"timestamp": ' + TS + b', "a": 1, "timestamp": ' + TS + b"}",
        400,
        '"timestamp"',
    ),
    "NaN": (b'{"timestamp": ' + TS + b', "a": NaN}', 400, "not valid UTF-8 JSON"),
    "Infinity": (b'{"timestamp": ' + TS + b', "a": Infinity}', 400, "not valid UTF-8 JSON"),
    "-Infinity": (b'{"timestamp": ' + TS + b', "a": -Infinity}', 400, "not valid UTF-8 JSON"),
    "10,000-digit count": (
        b'{"timestamp": ' + TS + b', "a": ' + b"9" * 10_000 + b"}",
        400,
        "10000-digit number",
    ),
    "10,000-digit timestamp": (b'{"timestamp": ' + b"1" * 10_000 + b', "a": 1}', 400, "timestamp"),
    "10,000-digit float": (
        b'{"timestamp": ' + TS + b', "a": 1.' + b"5" * 10_000 + b"}",
        400,
        'host "a"',
    ),
    "invalid UTF-8 in a host": (b'{"timestamp": ' + TS + b', "a\xff\xfe": 1}', 400, "UTF-8"),
    "overlong UTF-8": (b'{"timestamp": ' + TS + b', "\xc0\xaf": 1}', 400, "UTF-8"),
    "UTF-8 encoded surrogate": (b'{"timestamp": ' + TS + b', "\xed\xa0\x80": 1}', 400, "UTF-8"),
    "escaped lone surrogate": (b'{"timestamp": ' + TS + b', "\\ud800": 1}', 400, "surrogate"),
    "escaped lone low surrogate": (b'{"timestamp": ' + TS + b', "\\udc00x": 1}', 400, "surrogate"),
    "NUL in a host": (b'{"timestamp": ' + TS + b', "a\\u0000b": 1}', 400, "NUL"),
    "raw NUL byte": (b'{"timestamp": ' + TS + b', "a\x00b": 1}', 400, "not valid UTF-8 JSON"),
    "raw control character": (b'{"timestamp": ' + TS + b', "a\nb": 1}', 400, "UTF-8 JSON"),
    "UTF-16 body": ('{"timestamp": 1, "a": 1}'.encode("utf-16"), 400, "UTF-8"),
    "BOM": (b'\xef\xbb\xbf{"timestamp": ' + TS + b', "a": 1}', 400, "UTF-8 JSON"),
    "trailing garbage": (b'{"timestamp": ' + TS + b', "a": 1} {}', 400, "trailing"),
    "only whitespace": (b" \n\t ", 400, "empty"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_single_events(client: TestClient, case: str) -> None:
    body, status, words = HOSTILE[case]
    client.post("/counter", content=b'{"timestamp": ' + TS + b', "keep.com": 2}')
    response = client.post("/counter", content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]
    # Still exact: the good event is counted once, nothing of the bad one.
    assert client.get("/stats").json() == {"top_hosts": {"keep.com": 2}}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_events_fail_the_batch_they_are_in(client: TestClient, case: str) -> None:
    body, status, words = HOSTILE[case]
    good = b'{"timestamp": ' + TS + b', "keep.com": 2}'
    if not body.strip() or body.startswith(b"["):
        batch = b"[" + good + b", " + (body or b"{}") + b"]"
    else:
        batch = b"[" + good + b", " + body + b"]"
    response = client.post("/counters", content=batch)
    assert response.status_code == status, response.text
    assert words in response.json()["error"] or "UTF-8" in response.json()["error"]
    assert client.get("/stats").json() == {"top_hosts": {}}


@pytest.mark.parametrize("case", [case for case in HOSTILE if HOSTILE[case][0].strip()])
def test_hostile_events_fail_the_ndjson_batch_they_are_in(client: TestClient, case: str) -> None:
    body, status, _ = HOSTILE[case]
    good = b'{"timestamp": ' + TS + b', "keep.com": 2}'
    response = client.post(
        "/counters",
        content=good + b"\n" + body + b"\n",
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    # The hostile event starts on line 2; trailing garbage is a third event on it.
    assert answer["error"].startswith("line 2: ")
    assert answer["index"] == (2 if case == "trailing garbage" else 1)
    assert client.get("/stats").json() == {"top_hosts": {}}


def test_duplicates_in_ndjson_name_the_line(client: TestClient) -> None:
    body = b'{"timestamp": ' + TS + b', "a": 1}\n{"timestamp": ' + TS + b', "b": 1, "b": 1}\n'
    response = client.post(
        "/counters", content=body, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 400
    assert response.json()["index"] == 1
    assert "duplicate" in response.json()["error"]


def test_hosts_with_commas_quotes_and_escapes_are_still_fine(client: TestClient) -> None:
    body = b'{"timestamp": ' + TS + b', "a,b": 1, "c\\":d": 2, "e\\\\": 3, "f, ": 4}'
    assert client.post("/counter", content=body).json() == {"status": "ok"}
    assert client.get("/stats").json() == {"top_hosts": {"f, ": 4, "e\\": 3, 'c":d': 2, "a,b": 1}}


NDJSON = {"content-type": "application/x-ndjson"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"timestamp": ' + TS + b',\n"a,b": 1}\n',
        b'{"timestamp": ' + TS + b', "a,b": 1} {"timestamp": ' + TS + b', "keep.com": 2}',
        b'{"timestamp": ' + TS + b',\r"a,b": 1}\r\n',
    ],
)
def test_ndjson_read_across_lines_is_counted_not_a_500(client: TestClient, body: bytes) -> None:
    # Issue 11, defect 1: the key check read lines one way, the decoder another.
    response = client.post("/counters", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    assert client.get("/stats").json()["top_hosts"]["a,b"] == 1


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/counter", b'{"timestamp": 1, "a": 1e400', {}),
        ("/counters", b"[1e400,", {}),
        ("/counters", b'[{"timestamp": 1, "a": 1e400', {}),
        ("/counters", b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": 1e400', NDJSON),
    ],
)
def test_malformed_json_with_an_out_of_range_number_gets_400_json(
    client: TestClient, path: str, body: bytes, headers: dict[str, str]
) -> None:
    # Issue 11, defect 2: these were 500 text/plain.
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert "not valid UTF-8 JSON" in response.json()["error"]


def test_ndjson_line_numbers_count_blank_lines(client: TestClient) -> None:
    # Issue 11, defect 11: the line an editor shows, blank lines included.
    body = b'{"timestamp": ' + TS + b', "a": 1}\n\n\n{"timestamp": ' + TS + b', "a": -1}\n'
    response = client.post("/counters", content=body, headers=NDJSON)
    assert response.status_code == 400
    assert response.json()["index"] == 1
    assert response.json()["error"].startswith("line 4: ")
