"""Hypothesis-driven bodies against the app in process: never a 5xx, always a JSON answer.

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more
(``TOPHOSTS_FUZZ_EXAMPLES``) together with a long schemathesis run.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.support.clock import T0, FakeClock
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.windows import Window, past

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
