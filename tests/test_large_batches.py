"""A large batch leaves the event loop free while it is decoded and summed, and stays exact.

Past ``AT_ONCE_BYTES`` of body and ``AT_ONCE_HOSTS`` host counts, a batch is taken a
slice at a time (the decode, then the store's sums), the loop turning between
slices; it is checked and applied at once, so it is still all or nothing.
"""

from __future__ import annotations

import asyncio
import gc

import httpx
import msgspec
import pytest

from tests.support.clock import T0, FakeClock
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.windows import Window, past

pytestmark = pytest.mark.anyio

PAST_MINUTE = past(T0, Window.MINUTE).start
EVENTS = 20_000  # about 700 KB and 20,000 host counts: past both limits


def _client() -> httpx.AsyncClient:
    app = create_app(Settings(), clock=FakeClock())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _batch(n: int = EVENTS) -> list[dict[str, int]]:
    return [{"timestamp": PAST_MINUTE + i % 60, f"h{i % 100}": 1} for i in range(n)]


async def test_a_request_sent_during_a_large_batch_is_answered_before_it() -> None:
    async with _client() as client:
        order: list[str] = []

        async def post(name: str, path: str, body: object) -> httpx.Response:
            response = await client.post(path, content=msgspec.json.encode(body))
            order.append(name)
            return response

        big = asyncio.create_task(post("batch", "/counters", _batch()))
        await asyncio.sleep(0)  # the batch's request is under way
        small = await post("event", "/counter", {"timestamp": PAST_MINUTE, "solo": 1})
        assert small.json() == {"status": "ok"}
        assert (await big).json() == {"status": "ok", "accepted": EVENTS, "expired": 0}
        assert order == ["event", "batch"]
        top = (await client.get("/stats?stats_type=minute&limit=2")).json()["top_hosts"]
        assert top == {f"h{i}": EVENTS // 100 for i in range(2)}


@pytest.mark.parametrize("ndjson", [False, True])
async def test_a_large_batch_refused_at_its_last_event_changes_nothing(ndjson: bool) -> None:
    events = _batch()
    events[-1] = {"timestamp": PAST_MINUTE, "bad": -1}
    if ndjson:
        body = b"\n".join(map(msgspec.json.encode, events))
        headers = {"content-type": "application/x-ndjson"}
    else:
        body, headers = msgspec.json.encode(events), {}
    async with _client() as client:
        response = await client.post("/counters", content=body, headers=headers)
        assert response.status_code == 400
        error = response.json()
        assert error["index"] == EVENTS - 1
        message = 'count for host "bad" must be an integer from 0 to 9007199254740991, got -1'
        assert error["error"] == (f"line {EVENTS}: {message}" if ndjson else message)
        assert (await client.get("/stats?stats_type=minute")).json() == {"top_hosts": {}}


@pytest.mark.parametrize("refused", [False, True])
async def test_the_collector_is_held_off_while_a_large_batch_is_in_flight(refused: bool) -> None:
    # A full collection walks every event of a batch in flight (70-120 ms at 262,000
    # events); none happens until the batch is let go of, answered or refused.
    events = _batch()
    if refused:
        events[-1] = {"timestamp": PAST_MINUTE, "bad": -1}
    async with _client() as client:
        assert gc.isenabled()
        seen: list[bool] = []
        big = asyncio.create_task(client.post("/counters", content=msgspec.json.encode(events)))
        while not big.done():
            seen.append(gc.isenabled())
            await asyncio.sleep(0)
        assert (await big).status_code == (400 if refused else 200)
        assert False in seen  # off while it was decoded and applied
        assert gc.isenabled()  # and back on once it was let go of
        small = await client.post("/counters", content=msgspec.json.encode(_batch(10)))
        assert small.status_code == 200
        assert gc.isenabled()  # a small batch never holds it
