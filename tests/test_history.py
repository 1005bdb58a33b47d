"""History over HTTP: ``/stats?at=`` and ``/stats/history``, in process, on a fake clock,
for every store.

T0 is 22:13:20 UTC: the past minute is [22:12, 22:13) and freezes at 22:14:00; the
past hour is [21:00, 22:00) and freezes at 23:00.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0, FakeClock
from tests.support.http import assert_error
from tests.support.servers import Server
from tophosts.app import TopHosts
from tophosts.windows import HOUR, MINUTE, Window, ends, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start
HOUR_OF_T0 = PAST_HOUR + HOUR


def freeze(client: TestClient) -> None:
    """Run the app's freezer now, in the app's own loop (it also runs every second)."""
    app = client.app
    assert isinstance(app, TopHosts)
    client.portal.call(app.freeze)  # type: ignore[union-attr]


def at(client: TestClient, when: int, **params: Any) -> dict[str, int]:
    response = client.get("/stats", params={"at": when, **params})
    assert response.status_code == 200, response.text
    size = MINUTE if params.get("stats_type", "minute") == "minute" else HOUR
    assert response.headers["x-window-start"] == str(when - when % size)
    assert response.headers["x-window-end"] == str(when - when % size + size)
    assert list(response.json()) == ["top_hosts"]
    return dict(response.json()["top_hosts"])


def history(client: TestClient, since: int, until: int, **params: Any) -> list[Any]:
    response = client.get("/stats/history", params={"from": since, "to": until, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["windows"]
    return [(w["start"], w["end"], w["top_hosts"]) for w in body["windows"]]


def post(client: TestClient, *events: dict[str, int]) -> None:
    response = client.post("/counters", json=list(events))
    assert response.status_code == 200, response.text
    assert response.json()["expired"] == 0


# -- /stats?at= ------------------------------------------------------------------------


def test_at_answers_the_past_window_as_stats_does(make_client: MakeClient) -> None:
    client = make_client(history_top=2)
    post(client, {"timestamp": PAST_MINUTE + 7, "a": 3, "b": 2, "c": 1})
    plain = client.get("/stats", params={"limit": 3})
    for when in (PAST_MINUTE, PAST_MINUTE + 59):
        answered = client.get("/stats", params={"at": when, "limit": 3})
        assert answered.status_code == 200
        assert answered.text == plain.text == '{"top_hosts":{"a":3,"b":2,"c":1}}'
        for header in ("x-window-start", "x-window-end"):
            assert answered.headers[header] == plain.headers[header]
    # Not frozen yet: any limit /stats takes, also past --history-top.
    assert at(client, PAST_MINUTE, limit=1000) == {"a": 3, "b": 2, "c": 1}


def test_at_the_current_window_or_later_is_not_closed_yet(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    for when, window in (
        (T0, "minute"),
        (PAST_MINUTE + 60, "minute"),
        (T0 + 10 * 86400, "minute"),
        (HOUR_OF_T0, "hour"),
        (T0, "hour"),
    ):
        body = assert_error(
            client.get("/stats", params={"at": when, "stats_type": window}),
            400,
            "not closed yet",
            f"at={when}",
        )
        latest = past(T0, Window.from_label(window))
        assert f"the latest closed {window} is [{latest.start}, {latest.end})" in str(body)


def test_a_frozen_window_answers_exactly_what_it_answered_at_its_last_moment(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(history_top=3)
    post(
        client,
        {"timestamp": PAST_MINUTE, "a": 5, "d": 4, "b": 4, "c": 4, "e": 1},
        {"timestamp": PAST_MINUTE + 59, "e": 9},
    )
    clock.set(ends(MINUTE, PAST_MINUTE) - 0.001)
    last = client.get("/stats", params={"limit": 3}).json()["top_hosts"]
    assert last == {"e": 10, "a": 5, "b": 4}
    assert at(client, PAST_MINUTE, limit=3) == last
    clock.set(ends(MINUTE, PAST_MINUTE))  # the exact moment it freezes
    assert at(client, PAST_MINUTE, limit=3) == last
    freeze(client)
    assert at(client, PAST_MINUTE + 30, limit=3) == last
    assert at(client, PAST_MINUTE, limit=2) == {"e": 10, "a": 5}
    # By default --top (10), or --history-top if that is less.
    assert at(client, PAST_MINUTE) == last
    clock.advance(3 * 3600)
    assert at(client, PAST_MINUTE, limit=3) == last


def test_late_events_do_not_change_history_and_still_count_in_the_hour(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    post(client, {"timestamp": PAST_MINUTE + 1, "a": 1})
    clock.set(ends(MINUTE, PAST_MINUTE) + 1)
    freeze(client)
    post(client, {"timestamp": PAST_MINUTE + 2, "a": 5, "late": 2})
    assert at(client, PAST_MINUTE) == {"a": 1}
    assert history(client, PAST_MINUTE, PAST_MINUTE + 60) == [
        (PAST_MINUTE, PAST_MINUTE + 60, {"a": 1})
    ]
    clock.set(ends(HOUR, HOUR_OF_T0) - 1)  # T0's hour is the past one
    assert client.get("/stats", params={"stats_type": "hour"}).json() == {
        "top_hosts": {"a": 6, "late": 2}
    }
    assert at(client, HOUR_OF_T0, stats_type="hour") == {"a": 6, "late": 2}
    clock.set(ends(HOUR, HOUR_OF_T0))
    freeze(client)
    assert at(client, HOUR_OF_T0 + 1234, stats_type="hour") == {"a": 6, "late": 2}


def test_limit_up_to_history_top_is_exact_and_past_it_is_refused(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(history_top=3)
    post(client, {"timestamp": PAST_MINUTE, "a": 4, "b": 3, "c": 2, "d": 1})
    clock.set(ends(MINUTE, PAST_MINUTE))
    freeze(client)
    assert at(client, PAST_MINUTE, limit=3) == {"a": 4, "b": 3, "c": 2}
    for response in (
        client.get("/stats", params={"at": PAST_MINUTE, "limit": 4}),
        client.get(
            "/stats/history", params={"from": PAST_MINUTE, "to": PAST_MINUTE + 60, "limit": 4}
        ),
    ):
        assert_error(response, 400, "limit 4 is more than --history-top (3)", "from 1 to 3")
    assert history(client, PAST_MINUTE, PAST_MINUTE + 60, limit=3) == [
        (PAST_MINUTE, PAST_MINUTE + 60, {"a": 4, "b": 3, "c": 2})
    ]


def test_a_window_older_than_the_retention_is_404_naming_the_setting(
    make_client: MakeClient, clock: FakeClock
) -> None:
    default, short = make_client(), make_client(retention=5400, redis_prefix="short")
    for client in (default, short):
        post(client, {"timestamp": PAST_MINUTE, "a": 1})
    kept_until = ends(MINUTE, PAST_MINUTE) + 5400
    clock.set(kept_until - 1)
    assert at(short, PAST_MINUTE) == {"a": 1}
    clock.set(kept_until)
    freeze(short)
    body = assert_error(
        short.get("/stats", params={"at": PAST_MINUTE}),
        404,
        "older than --retention (90m)",
        f"[{PAST_MINUTE}, {PAST_MINUTE + 60})",
    )
    assert f"the oldest minute kept now starts at {PAST_MINUTE + 60}" in str(body["error"])
    assert history(short, PAST_MINUTE, PAST_MINUTE + 120) == [
        (PAST_MINUTE + 60, PAST_MINUTE + 120, {})
    ]
    # The default keeps a day.
    assert at(default, PAST_MINUTE) == {"a": 1}
    clock.set(ends(MINUTE, PAST_MINUTE) + 86400)
    assert_error(default.get("/stats", params={"at": PAST_MINUTE}), 404, "--retention (24h)")
    assert_error(default.get("/stats", params={"at": 0}), 404, "--retention (24h)")


def test_with_history_off_only_the_past_window_can_be_asked_about(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(retention=0)
    post(client, {"timestamp": PAST_MINUTE, "a": 1})
    assert at(client, PAST_MINUTE) == {"a": 1}
    assert history(client, PAST_MINUTE - 600, T0) == [(PAST_MINUTE, PAST_MINUTE + 60, {"a": 1})]
    clock.set(ends(MINUTE, PAST_MINUTE))
    assert_error(
        client.get("/stats", params={"at": PAST_MINUTE}),
        404,
        "older than --retention (0)",
        "history is off",
        "--retention 24h",
    )
    assert history(client, PAST_MINUTE - 600, PAST_MINUTE + 60) == []


# -- /stats/history --------------------------------------------------------------------


def test_history_lists_every_kept_window_of_the_range_oldest_first_across_hours(
    make_client: MakeClient, clock: FakeClock
) -> None:
    clock.set(HOUR_OF_T0 - 125)
    client = make_client(retention=86400, history_top=5)
    minutes = [HOUR_OF_T0 - 120, HOUR_OF_T0 - 60, HOUR_OF_T0, HOUR_OF_T0 + 120]
    for i, start in enumerate(minutes):
        clock.set(start + 5)
        post(client, {"timestamp": start, f"m{i}": i + 1, "all": 1})
    clock.set(HOUR_OF_T0 + 185)  # the past minute is [22:02, 22:03); [22:03...) is open
    freeze(client)
    listed = history(client, HOUR_OF_T0 - 150, HOUR_OF_T0 + 600)
    assert listed == [
        (HOUR_OF_T0 - 180, HOUR_OF_T0 - 120, {}),
        (HOUR_OF_T0 - 120, HOUR_OF_T0 - 60, {"m0": 1, "all": 1}),
        (HOUR_OF_T0 - 60, HOUR_OF_T0, {"m1": 2, "all": 1}),
        (HOUR_OF_T0, HOUR_OF_T0 + 60, {"m2": 3, "all": 1}),
        (HOUR_OF_T0 + 60, HOUR_OF_T0 + 120, {}),
        (HOUR_OF_T0 + 120, HOUR_OF_T0 + 180, {"m3": 4, "all": 1}),  # the past minute, live
    ]
    # Each as /stats?at= answers it.
    for start, _, top in listed:
        assert at(client, start) == top
    # The windows overlapping [from, to); none for an empty range.
    assert [w[0] for w in history(client, HOUR_OF_T0 - 61, HOUR_OF_T0 + 1)] == [
        HOUR_OF_T0 - 120,
        HOUR_OF_T0 - 60,
        HOUR_OF_T0,
    ]
    assert history(client, HOUR_OF_T0 - 30, HOUR_OF_T0 - 30) == []
    assert history(client, HOUR_OF_T0 + 180, HOUR_OF_T0 + 3600) == []
    # Hours: the frozen one before T0's, then T0's (the past hour now, live).
    clock.set(HOUR_OF_T0 + HOUR + 10)
    freeze(client)
    assert history(client, PAST_HOUR - HOUR, HOUR_OF_T0 + 2 * HOUR, stats_type="hour") == [
        (PAST_HOUR - HOUR, PAST_HOUR, {}),
        (PAST_HOUR, HOUR_OF_T0, {"all": 2, "m1": 2, "m0": 1}),
        (HOUR_OF_T0, HOUR_OF_T0 + HOUR, {"m3": 4, "m2": 3, "all": 2}),
    ]


def test_history_answers_at_most_1440_windows_a_call(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(history_top=10)
    post(client, {"timestamp": PAST_MINUTE, "a": 1})
    now = PAST_MINUTE + 60  # the start of the current minute
    day = history(client, now - 86400, now, limit=10)
    assert len(day) == 1440
    assert day[0] == (now - 86400, now - 86400 + 60, {})
    assert day[-1] == (PAST_MINUTE, now, {"a": 1})
    assert_error(
        client.get("/stats/history", params={"from": now - 86400, "to": now + 1}),
        400,
        "spans 1441 minutes",
        "at most 1440 windows",
    )
    # Windows before the retention are not listed.
    assert history(client, now - 86400 - 600, now - 86400 + 60) == [
        (now - 86400 - 60, now - 86400, {}),
        (now - 86400, now - 86400 + 60, {}),
    ]
    assert history(client, 0, 1440 * HOUR, stats_type="hour") == []


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "1"}, ["needs from and to"]),
        ({"to": "1"}, ["needs from and to"]),
        ({"from": "x", "to": "1"}, ["from must be a time in Unix seconds", "'x'"]),
        ({"from": "1", "to": "-5"}, ["to must be a time in Unix seconds", "'-5'"]),
        ({"from": "1", "to": "1.5"}, ["to must be a time"]),
        ({"from": "1", "to": "99999999999999999"}, ["to must be a time", "9007199254740991"]),
        ({"from": "10", "to": "5"}, ["from (10) is after to (5)"]),
        ({"from": "1", "to": "2", "stats_type": "day"}, ["stats_type must be 'minute' or 'hour'"]),
        ({"from": "1", "to": "2", "limit": "0"}, ["limit must be an integer from 1 to 1000"]),
        ({"from": "1", "to": "2", "at": "1"}, ["unknown query parameter 'at'", "from=<unix"]),
    ],
)
def test_bad_history_queries_are_400_saying_what_is_accepted(
    client: TestClient, params: dict[str, str], words: list[str]
) -> None:
    assert_error(client.get("/stats/history", params=params), 400, *words)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("at=soon", ["at must be a time in Unix seconds (UTC)", "'soon'"]),
        ("at=-1", ["at must be a time"]),
        ("at=1&at=2", ["'at' is given more than once"]),
        ("when=1", ["unknown query parameter 'when'", "at=<unix seconds>"]),
        ("at=1&limit=0", ["limit must be an integer from 1 to 1000"]),
    ],
)
def test_bad_at_queries_are_400(client: TestClient, query: str, words: list[str]) -> None:
    assert_error(client.get("/stats?" + query), 400, *words)


# -- a real process -------------------------------------------------------------------


@pytest.mark.e2e
def test_history_survives_a_restart_five_minutes_on(tmp_path: Path) -> None:
    snap = str(tmp_path / "snap")
    # The server's clock at 5 s into a minute: nothing turns while we post.
    offset = 5 - time.time() % 60
    first = Server("--snapshot", snap, "--clock-offset", f"{offset:.3f}", "--log-level", "warning")
    minute = int(time.time() + offset) // 60 * 60 - 60  # the past minute
    events = [
        {"timestamp": minute + 1, "a.example": 7, "b.example": 2},
        {"timestamp": minute + 59, "b.example": 5, "c.example": 1},
    ]
    try:
        assert httpx.post(first.url + "/counters", json=events).json()["accepted"] == 2
        live = httpx.get(first.url + "/stats")
        assert live.text == '{"top_hosts":{"a.example":7,"b.example":7,"c.example":1}}'
    finally:
        first.proc.send_signal(signal.SIGTERM)
        code, out = first.stop()
    assert code == 0, out
    again = Server(
        "--snapshot", snap, "--clock-offset", f"{offset + 300:.3f}", "--log-level", "warning"
    )
    try:
        answer = httpx.get(again.url + "/stats", params={"at": minute + 30})
        assert answer.status_code == 200, answer.text
        assert answer.text == live.text
        assert answer.headers["x-window-start"] == str(minute)
        assert answer.headers["x-window-end"] == str(minute + 60)
        listed = httpx.get(
            again.url + "/stats/history", params={"from": minute - 60, "to": minute + 120}
        )
        assert listed.json() == {
            "windows": [
                {"start": minute - 60, "end": minute, "top_hosts": {}},
                {"start": minute, "end": minute + 60, "top_hosts": live.json()["top_hosts"]},
                {"start": minute + 60, "end": minute + 120, "top_hosts": {}},
            ]
        }
    finally:
        again.stop()
