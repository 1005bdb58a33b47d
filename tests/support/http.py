"""Assertions on HTTP answers, in process and from real servers."""

from __future__ import annotations

import time

import httpx
from starlette.testclient import TestClient

from tests.support.servers import Server


def top(client: TestClient, query: str = "") -> dict[str, int]:
    response = client.get("/stats" + query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["top_hosts"]
    return dict(body["top_hosts"])


def assert_error(response: httpx.Response, status: int, *words: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str)
    for word in words:
        assert word in body["error"]
    return dict(body)


def past_hour_ts() -> int:
    # The past hour holds still for a whole test (unless it runs across an hour).
    return int(time.time()) - 3600


def hour_stats(server: Server) -> dict[str, int]:
    response = httpx.get(server.url + "/stats", params={"stats_type": "hour", "limit": 1000})
    assert response.status_code == 200, response.text
    return dict(response.json()["top_hosts"])
