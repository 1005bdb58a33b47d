"""The app: dispatch, GET /stats, health, methods and paths, in process, on a fake clock."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0, FakeClock
from tests.support.http import assert_error, top
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


# -- GET /stats ------------------------------------------------------------------


def test_limit_and_top_setting(make_client: MakeClient) -> None:
    client = make_client(top=2)
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 3, "b": 2, "c": 1})
    assert top(client) == {"a": 3, "b": 2}
    assert top(client, "?limit=1") == {"a": 3}
    assert top(client, "?limit=1000") == {"a": 3, "b": 2, "c": 1}


def test_default_top_is_ten(client: TestClient) -> None:
    client.post(
        "/counter", json={"timestamp": PAST_MINUTE, **{f"h{i:02}": 100 - i for i in range(15)}}
    )
    assert list(top(client)) == [f"h{i:02}" for i in range(10)]


def test_stats_names_its_window_in_headers_not_the_body(
    client: TestClient, clock: FakeClock
) -> None:
    # T0 is 22:13:20 UTC: the past minute is [22:12, 22:13) and the past hour [21:00, 22:00).
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1})
    response = client.get("/stats")
    assert response.json() == {"top_hosts": {"a": 1}}
    assert response.headers["x-window-start"] == str(PAST_MINUTE) == str(T0 - 80)
    assert response.headers["x-window-end"] == str(PAST_MINUTE + 60)
    hour = client.get("/stats?stats_type=hour")
    assert list(hour.json()) == ["top_hosts"]
    assert (hour.headers["x-window-start"], hour.headers["x-window-end"]) == (
        str(PAST_HOUR),
        str(PAST_HOUR + 3600),
    )
    # The headers follow the server's clock as the window rolls.
    clock.advance(40)
    response = client.get("/stats")
    assert response.json() == {"top_hosts": {}}
    assert response.headers["x-window-start"] == str(PAST_MINUTE + 60)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?stats_type=day", ["'day'", "'minute' or 'hour'"]),
        ("?stats_type=MINUTE", ["'MINUTE'"]),
        ("?stats_type=", ["''"]),
        ("?stats_type=minute&stats_type=hour", ["'stats_type'", "more than once"]),
        ("?limit=0", ["from 1 to 1000", "'0'"]),
        ("?limit=1001", ["'1001'"]),
        ("?limit=x", ["'x'"]),
        ("?limit=1.5", ["'1.5'"]),
        ("?limit=-1", ["'-1'"]),
        ("?limit=", ["''"]),
        ("?limit=%EF%BC%95", ["from 1 to 1000"]),
        ("?stat_type=hour", ["'stat_type'", "stats_type"]),
    ],
)
def test_bad_stats_parameters_get_400(client: TestClient, query: str, words: list[str]) -> None:
    assert_error(client.get("/stats" + query), 400, *words)


# -- the rest ------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/counter", "POST"), ("GET", "/counters", "POST"), ("POST", "/stats", "GET")],
)
def test_wrong_methods_get_405_with_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert_error(response, 405, method, path)
    assert allow in response.headers["allow"]


def test_unknown_paths_get_404_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "/nope", "GET /stats")
    assert_error(client.post("/counter/extra", json={}), 404, "/counter/extra")


# -- issue 11: contract details --------------------------------------------------


@pytest.mark.parametrize("path", ["/counter/", "/counters/", "/stats/", "/metrics/", "/healthz/"])
def test_a_trailing_slash_is_a_json_404_not_a_redirect(client: TestClient, path: str) -> None:
    for method in ("GET", "POST"):
        response = client.request(
            method, path, headers={"host": "evil.example"}, follow_redirects=False
        )
        assert_error(response, 404, path)
        assert "location" not in response.headers


# The first two take the fast lane; an escaped digit goes down the Starlette route.
@pytest.mark.parametrize("query", ["", "?stats_type=minute&limit=5", "?limit=%35"])
def test_stats_reads_the_clock_once(client: TestClient, clock: FakeClock, query: str) -> None:
    # A minute turns between two readings of the clock: the headers and the
    # body must still name one window.
    turn = T0 - T0 % 60 + 60
    clock.set(turn - 0.5)
    client.post("/counter", json={"timestamp": turn - 100, "one": 1})
    client.post("/counter", json={"timestamp": turn - 30, "two": 1})
    clock.script(turn - 0.5, turn + 0.5)
    response = client.get("/stats" + query)
    assert response.headers["x-window-start"] == str(turn - 120)
    assert response.json() == {"top_hosts": {"one": 1}}
