"""Cardinality: --max-tracked-hosts is exact, per window, and answers 429 past it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.conftest import MakeClient
from tests.support.clock import T0
from tophosts.events import EventError
from tophosts.store import Store
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start


# -- cardinality ----------------------------------------------------------------


def test_new_hosts_past_max_tracked_hosts_get_429_while_known_ones_count(
    make_client: MakeClient,
) -> None:
    client = make_client(max_tracked_hosts=3)
    assert (
        client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1, "b": 1}).status_code == 200
    )
    assert client.post("/counter", json={"timestamp": PAST_MINUTE, "c": 1}).status_code == 200
    refused = client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 5, "new.com": 1})
    assert refused.status_code == 429
    assert '"new.com"' in refused.json()["error"]
    assert "--max-tracked-hosts" in refused.json()["error"]
    batch = [{"timestamp": PAST_MINUTE, "a": 1}, {"timestamp": PAST_MINUTE, "d": 1}]
    refused = client.post("/counters", json=batch)
    assert (refused.status_code, refused.json()["index"]) == (429, 1)
    assert client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 2}).status_code == 200
    assert client.get("/stats").json() == {"top_hosts": {"a": 3, "b": 1, "c": 1}}
    metrics = client.get("/metrics").text
    assert 'tophosts_events_total{result="rejected"} 3.0' in metrics
    assert 'route="/counter",status="429"} 1.0' in metrics


def test_the_cap_is_per_window(make_client: MakeClient) -> None:
    client = make_client(max_tracked_hosts=2)
    client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1, "b": 1})
    # The past hour is another window, with room of its own.
    past_hour = past(T0, Window.HOUR).start
    assert client.post("/counter", json={"timestamp": past_hour, "c": 1, "d": 1}).status_code == 200
    assert client.post("/counter", json={"timestamp": past_hour, "e": 1}).status_code == 429


# -- slow clients and overload, on a real server ---------------------------------


@pytest.mark.anyio
async def test_concurrent_new_hosts_stop_exactly_at_the_cap(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(max_tracked_hosts=5)
    results = await asyncio.gather(
        *(store.add([(PAST_MINUTE, {f"h{i}": 1})]) for i in range(12)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, EventError)]
    assert len(refused) == 7
    assert {r.status for r in refused} == {429}
    assert len(await store.top(Window.MINUTE, 100)) == 5
    await store.close()
