"""Hypothesis-driven bodies against the app in process: never a 5xx, always a JSON answer.

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more
(``TOPHOSTS_FUZZ_EXAMPLES``) together with a long schemathesis run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.fuzz import reference
from tests.support.clock import T0, FakeClock
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.windows import Window, past

pytestmark = pytest.mark.slow  # generated bodies by the thousand; `make fuzz` runs more

EXAMPLES = int(os.environ.get("TOPHOSTS_FUZZ_EXAMPLES", "150"))
PAST_MINUTE = past(T0, Window.MINUTE).start

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
near_valid = st.dictionaries(
    st.sampled_from(["timestamp", "a", "b", "", "\x00", "é" * 70, "x" * 256]),
    st.one_of(
        st.integers(-5, 5),
        st.integers(PAST_MINUTE - 7200, PAST_MINUTE + 7200),
        st.sampled_from([2**53 - 1, 2**53, True, 1.0, "1", None]),
    ),
    max_size=5,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(msgspec.json.encode),
    near_valid.map(msgspec.json.encode),
    st.lists(near_valid, max_size=4).map(msgspec.json.encode),
    st.lists(near_valid, max_size=4).map(lambda es: b"\n".join(map(msgspec.json.encode, es))),
    st.tuples(near_valid.map(msgspec.json.encode), st.binary(max_size=4), st.integers(0, 40)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
)
content_types = st.sampled_from(
    ["application/json", "application/x-ndjson", "application/x-www-form-urlencoded", "text/plain"]
)


@pytest.fixture(scope="module")
def fuzz_client() -> Any:
    clock = FakeClock()
    app = create_app(Settings(max_hosts=3, max_body=4096), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["/counter", "/counters"]),
    body=bodies,
    content_type=content_types,
)
def test_no_body_gets_a_server_error(
    fuzz_client: TestClient, path: str, body: bytes, content_type: str
) -> None:
    before = fuzz_client.get("/stats?stats_type=hour&limit=1000").json()
    response = fuzz_client.post(path, content=body, headers={"content-type": content_type})
    assert response.status_code in (200, 400, 413), response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    if response.status_code != 200:
        assert set(answer) <= {"error", "index"}
        assert isinstance(answer["error"], str)
        assert answer["error"]
        # A refused body changes nothing.
        assert fuzz_client.get("/stats?stats_type=hour&limit=1000").json() == before


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=4))
def test_no_query_string_gets_a_server_error(
    fuzz_client: TestClient, query: list[tuple[str, str]]
) -> None:
    response = fuzz_client.get("/stats", params=query)
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"


# -- byte-level properties over HTTP, on both stores (issue 11) ----------------
#
# Bodies whose answers depend on the store run on both stores, the many more
# that only the decoder answers on the memory store. Each request goes to a
# fresh past minute and hour: the fake clock moves two hours first, and the
# bodies carry the new past minute's start as timestamp.
# The standard-library reading of the rules (tests/fuzz/reference.py) predicts
# each answer: 200 for a body it accepts (or a 400 when a timestamp it accepts
# is ahead of the clock), else a 400 naming the same event.

NDJSON = {"content-type": "application/x-ndjson"}
ROUTES: dict[str, tuple[str, dict[str, str], Any]] = {
    "one": ("/counter", {}, reference.one),
    "array": ("/counters", {}, reference.array),
    "ndjson": ("/counters", NDJSON, reference.ndjson),
}
MAX_HOSTS = Settings().max_hosts
SMALL = max(3, EXAMPLES // 30)
"""Examples for the properties that send a request per byte of each body."""


def assert_contract(response: Any, path: str) -> dict[str, Any]:
    """A 2xx, or a 4xx of ``{"error": "..."}`` (and ``"index"``, an int, on a batch)."""
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    if response.status_code >= 400:
        assert set(answer) <= {"error", "index"}, answer
        assert isinstance(answer["error"], str)
        assert answer["error"]
        assert "could not say why" not in answer["error"]  # the decoder's guard never fires
        if "index" in answer:
            assert path == "/counters"
            assert type(answer["index"]) is int
            assert answer["index"] >= 0
    return answer


class Poster:
    """Posts bodies built for the current past minute, two clock hours apart."""

    def __init__(self, client: TestClient, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock

    def timestamp(self) -> bytes:
        self.clock.advance(7200)
        return b"%d" % past(self.clock(), Window.MINUTE).start

    def post(self, route: str, body: bytes) -> Any:
        """Post ``body``, check the contract and the reference's prediction; the response."""
        path, headers, read = ROUTES[route]
        response = self.client.post(path, content=body, headers=headers)
        answer = assert_contract(response, path)
        expected = read(body, MAX_HOSTS)
        if not expected.known:
            return response
        if expected.events is not None:
            ahead = any(ts > self.clock() for ts, _ in expected.events)
            assert response.status_code == 200 or (ahead and response.status_code == 400), (
                body,
                response.text,
            )
        else:
            assert response.status_code == 400, (body, response.text)
            assert answer.get("index") == expected.index, (body, answer)
        return response


@pytest.fixture
def poster(make_client: MakeClient, clock: FakeClock) -> Poster:
    """On each store: for the properties whose answers depend on the store."""
    return Poster(make_client(), clock)


@pytest.fixture
def decode_poster() -> Iterator[Poster]:
    """On the memory store only: for the many bodies whose answers only the decoder decides."""
    clock = FakeClock()
    with TestClient(create_app(Settings(), clock=clock), raise_server_exceptions=False) as client:
        yield Poster(client, clock)


PROPERTY = settings(
    max_examples=SMALL,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

host_names = st.text(
    st.sampled_from([*',"\\{}[]: \t\u00e9\u4f8b\U0001f600/', "\u2028", "\x7f"])
    | st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=12,
).filter(lambda h: h != "timestamp")
counts = st.dictionaries(host_names, st.integers(1, 1000), min_size=1, max_size=4)


def encode(route: str, ts: bytes, events: list[dict[str, int]], crlf: bool = False) -> bytes:
    bodies = [b'{"timestamp":' + ts + b"," + msgspec.json.encode(e)[1:] for e in events]
    if route == "one":
        return bodies[0]
    if route == "array":
        return b"[" + b",".join(bodies) + b"]"
    return (b"\r\n" if crlf else b"\n").join(bodies) + b"\n"


@PROPERTY
@given(route=st.sampled_from(list(ROUTES)), events=st.lists(counts, min_size=1, max_size=3))
def test_every_truncation_of_a_valid_body_is_answered_by_the_contract(
    poster: Poster, route: str, events: list[dict[str, int]]
) -> None:
    body = encode(route, poster.timestamp(), events)
    for cut in range(len(body)):
        response = poster.post(route, encode(route, poster.timestamp(), events)[:cut])
        if route != "ndjson":
            assert response.status_code == 400  # no prefix of a JSON document is one
    assert poster.post(route, encode(route, poster.timestamp(), events)).status_code == 200


OUT_OF_RANGE = [
    "1e400", "-1e400", "1E400", "-1", "9007199254740992", "9007199254740991",
    "1" + "0" * 400, "18446744073709551616", "-9223372036854775809", "-0", "-0.0",
    "1.0", "0.0", "1e-400", "1e2", "NaN", "-NaN", "Infinity", "-Infinity", "nan",
    "inf", "01", "+1", ".5", "1.", "0x10", "1_000", "true", "null", '"1"', "[]", "{}",
]  # fmt: skip
SLOTS = {
    "one": b'{"timestamp": @, "a,b": @, "\\u00e9\\"{}": @}',
    "array": b'[{"timestamp": @, "a": @}, {"timestamp": @, "b,c": @, "d": @}]',
    "ndjson": b'{"timestamp": @, "a": @}\n\n{"timestamp":@,\n"b,c": @} {"timestamp": @, "d": @}',
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_out_of_range_numbers_in_every_value_position(decode_poster: Poster, route: str) -> None:
    poster = decode_poster
    template = SLOTS[route]
    slots = template.count(b"@")
    for slot in range(slots):
        for token in OUT_OF_RANGE:
            ts = poster.timestamp()
            parts = template.split(b"@")
            values = [
                token.encode()
                if i == slot
                else ts
                if parts[i].rstrip().endswith(b'"timestamp":')
                else b"1"
                for i in range(slots)
            ]
            body = b"".join(p + v for p, v in zip(parts, [*values, b""], strict=True))
            poster.post(route, body)
            # And the same body cut short, right after the number and by one byte.
            poster.post(route, body[: len(b"".join(parts[: slot + 1])) + len(token)])
            poster.post(route, body[:-1])


CONTROLS = [
    b"\r", b"\n", b"\r\n", b"\x0c", b"\t", b"\x0b", b"\x00", b"\\u0000", b"\\r", b"\\n",
    b"\\f", b"\\t", b"\\u000a", b"\\", b'"', b",", b"\xc2\x85", b"\xe2\x80\xa8",
]  # fmt: skip


@pytest.mark.parametrize("route", list(ROUTES))
def test_control_characters_anywhere(decode_poster: Poster, route: str) -> None:
    poster = decode_poster
    ts = b"%d" % PAST_MINUTE
    base = {
        "one": b'{"timestamp":' + ts + b',"a,b":1}',
        "array": b'[{"timestamp":' + ts + b',"a,b":1}]',
        "ndjson": b'{"timestamp":' + ts + b',"a,b":1}\n{"timestamp":' + ts + b',"c":2}\n',
    }[route]
    for at in range(len(base) + 1):
        for control in CONTROLS:
            body = base[:at] + control + base[at:]
            poster.post(route, body.replace(ts, poster.timestamp()))


@settings(
    max_examples=EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(list(ROUTES)),
    events=st.lists(counts, min_size=1, max_size=3),
    crlf=st.booleans(),
    repeat=st.none() | st.integers(0, 100),
)
def test_any_host_name_is_counted_exactly_or_refused_as_a_repeat(
    poster: Poster,
    route: str,
    events: list[dict[str, int]],
    crlf: bool,
    repeat: int | None,
) -> None:
    body = encode(route, poster.timestamp(), events, crlf)
    if repeat is not None:
        # Repeat one of the last event's keys inside it: a duplicate key.
        last = events[-1] if route != "one" else events[0]
        key = msgspec.json.encode(sorted(last)[repeat % len(last)])
        end = body.rindex(b"}") if route != "one" else len(body) - 1
        body = body[:end] + b"," + key + b":1" + body[end:]
    response = poster.post(route, body)
    if repeat is not None:
        assert response.status_code == 400
        assert "duplicate key" in response.json()["error"]
        assert poster.client.get("/stats?limit=1000").json() == {"top_hosts": {}}
        return
    assert response.status_code == 200
    expected: dict[str, int] = {}
    for event in events if route != "one" else events[:1]:
        for host, n in event.items():
            expected[host] = expected.get(host, 0) + n
    assert poster.client.get("/stats?limit=1000").json()["top_hosts"] == expected
