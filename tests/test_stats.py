"""GET /stats answers the same through the fast lane as through the Starlette route."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support.clock import T0, FakeClock
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.stats import simple_query
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start

QUERIES = [
    "",
    "?stats_type=minute",
    "?stats_type=hour",
    "?limit=2",
    "?stats_type=hour&limit=1",
    "?limit=1000&stats_type=minute",
    "?limit=0",
    "?limit=1001",
    "?limit=02",
    "?limit=",
    "?stats_type=Hour",
    "?stats_type=%68our",
    "?stats_type=hour&stats_type=minute",
    "?limit=1&limit=2",
    "?top=3",
    "?stats_type=hour&",
]


def clients(clock: FakeClock) -> tuple[TestClient, TestClient]:
    pair = []
    for fast in (True, False):
        app = create_app(Settings(top=3), clock=clock)
        if not fast:
            app._stats.sync = None  # every query down the Starlette route
        client = TestClient(app)
        client.__enter__()
        client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 3, "b": 2, "c": 1, "d": 1})
        client.post("/counter", json={"timestamp": PAST_HOUR, "h": 7, "i": 7})
        pair.append(client)
    return pair[0], pair[1]


@pytest.mark.parametrize("query", QUERIES)
def test_the_fast_lane_answers_like_the_route(clock: FakeClock, query: str) -> None:
    fast, slow = clients(clock)
    try:
        a, b = fast.get("/stats" + query), slow.get("/stats" + query)
        assert (a.status_code, a.content) == (b.status_code, b.content)
        for header in ("content-type", "content-length", "x-window-start", "x-window-end"):
            assert a.headers.get(header) == b.headers.get(header)
        # Both count the request alike.
        counted = f'route="/stats",status="{a.status_code}"}} 1.0'
        assert counted in fast.get("/metrics").text
    finally:
        fast.__exit__(None, None, None)
        slow.__exit__(None, None, None)


def test_only_plain_valid_queries_take_the_fast_lane() -> None:
    assert simple_query(b"") == (Window.MINUTE, None)
    assert simple_query(b"stats_type=hour&limit=5") == (Window.HOUR, 5)
    assert simple_query(b"limit=1000") == (Window.MINUTE, 1000)
    for query in (b"limit=0", b"limit=1001", b"stats_type=%68our", b"x=1", b"limit=1&limit=1"):
        assert simple_query(query) is None
