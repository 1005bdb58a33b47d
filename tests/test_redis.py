"""The Redis store beyond the shared suites: same answers as memory, layout, failure."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.support.clock import T0, FakeClock
from tests.support.servers import RedisServer, ReplyProxy, free_port
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.events import MAX_COUNT, Event, EventError
from tophosts.store import StoreUnavailable, WriteUncertain
from tophosts.store import redis as redis_store
from tophosts.store.memory import MemoryStore
from tophosts.store.redis import RedisStore
from tophosts.windows import HOUR, MINUTE, Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start

_prefixes = itertools.count()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the same answers as the memory store, for any sequence -------------------

HOSTS = ["a", "b", "c", "d", "A", "a-", "é.com", "z.io", "日本.jp", "😀.io"]
counts = st.dictionaries(
    st.sampled_from(HOSTS),
    st.one_of(st.integers(0, 4), st.integers(MAX_COUNT - 3, MAX_COUNT)),
    min_size=1,
    max_size=5,
)
events = st.tuples(st.integers(PAST_HOUR - 90, T0 + 330), counts)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(events, max_size=6)),
        st.tuples(st.just("advance"), st.sampled_from([1, 30, 59, 60, 3600])),
        st.tuples(st.just("top"), st.sampled_from(list(Window)), st.integers(1, 8)),
    ),
    max_size=30,
)


async def outcome(call: Any) -> Any:
    """What a store call returned, or the refusal it raised, comparably."""
    try:
        return await call
    except EventError as exc:
        return ("refused", exc.message, exc.index)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_redis_and_memory_give_identical_answers(redis_url: str, steps: list[Any]) -> None:
    clock = FakeClock()
    memory = MemoryStore(clock=clock, max_skew=300)
    shared = RedisStore(redis_url, clock=clock, max_skew=300, prefix=f"eq{next(_prefixes)}")

    async def check() -> None:
        try:
            for step in steps:
                if step[0] == "add":
                    batch: list[Event] = step[1]
                    got = await outcome(shared.add([(ts, dict(c)) for ts, c in batch]))
                    assert got == await outcome(memory.add([(ts, dict(c)) for ts, c in batch]))
                elif step[0] == "advance":
                    clock.advance(step[1])
                else:
                    assert await shared.top(step[1], step[2]) == await memory.top(step[1], step[2])
            for window in Window:
                assert await shared.top(window, 8) == await memory.top(window, 8)
        finally:
            await shared.close()

    run(check())


def test_ties_at_the_cut_off_take_the_smallest_names(redis_url: str) -> None:
    clock = FakeClock()

    async def check() -> None:
        memory = MemoryStore(clock=clock)
        shared = RedisStore(redis_url, clock=clock)
        batch: list[Event] = [(PAST_MINUTE, {f"h{i:03}": 7 for i in range(300)})]
        batch.append((PAST_MINUTE, {"top": 9, "h250": 1, "h007": 1}))
        for store in (memory, shared):
            await store.add(batch)
        try:
            for limit in (1, 2, 3, 4, 10, 299, 300, 301, 302, 1000):
                assert await shared.top(Window.MINUTE, limit) == await memory.top(
                    Window.MINUTE, limit
                )
            assert await shared.top(Window.MINUTE, 4) == [
                ("top", 9),
                ("h007", 8),
                ("h250", 8),
                ("h000", 7),
            ]
        finally:
            await shared.close()

    run(check())


# -- concurrency: the group commit keeps each request whole and separate -----


def test_concurrent_requests_overflow_one_by_one(redis_url: str) -> None:
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(redis_url, clock=clock)
        try:
            await store.add([(PAST_MINUTE, {"big": MAX_COUNT - 10})])
            results = await asyncio.gather(
                *(store.add([(PAST_MINUTE, {"x": 1, "big": 1})]) for _ in range(40)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, EventError)]
            assert len(refused) == 30
            assert all(r.index is None and '"big"' in r.message for r in refused)
            assert await store.top(Window.MINUTE, 2) == [("big", MAX_COUNT), ("x", 10)]
        finally:
            await store.close()

    run(check())


def test_a_batch_larger_than_one_call_still_goes_whole(redis_url: str) -> None:
    clock = FakeClock()
    big: list[Event] = [(PAST_MINUTE, {f"h{i}": 1 for i in range(i, i + 1000)}) for i in range(30)]

    async def check() -> None:
        store = RedisStore(redis_url, clock=clock)
        try:
            smalls = [store.add([(PAST_MINUTE, {"s": 1})]) for _ in range(50)]
            await asyncio.gather(store.add(big), *smalls)
            sizes = await store.sizes()
            assert (sizes.minute_hosts, sizes.hour_hosts, sizes.windows) == (1030, 1030, 2)
            assert await store.top(Window.MINUTE, 1) == [("s", 50)]
        finally:
            await store.close()

    run(check())


def test_a_request_queued_as_a_flusher_winds_down_is_not_stranded(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With one call in flight, each add() below queues while the flusher that
    # served the previous one is still returning its connection.
    monkeypatch.setattr(redis_store, "_IN_FLIGHT", 1)
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(redis_url, clock=clock)
        try:
            # Awaited in this task (wait_for would add a task and hide the race).
            async with asyncio.timeout(10):
                for _ in range(50):
                    await store.add([(PAST_MINUTE, {"a": 1})])
            assert await store.top(Window.MINUTE, 1) == [("a", 50)]
        finally:
            await store.close()

    run(check())


# -- layout ---------------------------------------------------------------------


def test_keys_layout_ttls_and_no_zero_members(redis_url: str, rclient: redis.Redis) -> None:
    clock = FakeClock()
    now_minute = T0 - T0 % MINUTE

    async def check() -> None:
        store = RedisStore(redis_url, clock=clock, prefix="lay")
        try:
            await store.add([(PAST_MINUTE + 1, {"a": 2, "zero": 0}), (T0, {"n": 1})])
            await store.add([(T0, {"only-zero": 0})])
        finally:
            await store.close()

    run(check())
    # A closed store leaves no write tokens behind (see the settle tests).
    keys = {k.decode() if isinstance(k, bytes) else k for k in rclient.keys("*")}
    assert keys == {f"lay:m:{PAST_MINUTE}", f"lay:m:{now_minute}", f"lay:h:{T0 - T0 % HOUR}"}
    assert rclient.zrange(f"lay:m:{PAST_MINUTE}", 0, -1, withscores=True) == [(b"a", 2.0)]
    # A minute is asked about until 120 s after its start, an hour until 7200 s after.
    for key, end in [
        (f"lay:m:{PAST_MINUTE}", PAST_MINUTE + 120),
        (f"lay:m:{now_minute}", now_minute + 120),
        (f"lay:h:{T0 - T0 % HOUR}", T0 - T0 % HOUR + 7200),
    ]:
        assert (end - T0) * 1000 - 2000 < rclient.pttl(key) <= (end - T0) * 1000


def test_a_foreign_key_in_the_way_fails_the_write_whole(
    redis_url: str, rclient: redis.Redis
) -> None:
    rclient.set(f"tophosts:m:{PAST_MINUTE}", "not a sorted set")
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(redis_url, clock=clock)
        try:
            with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
                await store.add([(PAST_MINUTE, {"a": 1})])
        finally:
            await store.close()

    run(check())
    assert not rclient.exists(f"tophosts:h:{PAST_HOUR}")


# -- failure ----------------------------------------------------------------------


def test_an_unreachable_redis_is_unavailable_quickly() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def check() -> None:
        store = RedisStore(url, clock=FakeClock(), timeout=0.5)
        started = time.monotonic()
        for call in (
            store.add([(PAST_MINUTE, {"a": 1})]),
            store.top(Window.MINUTE, 3),
            store.ping(),
            store.sizes(),
        ):
            with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{url.split(':')[2]}"):
                await call
        assert time.monotonic() - started < 3
        await store.close()

    run(check())


def test_the_api_answers_503_with_retry_after_when_redis_is_down(clock: FakeClock) -> None:
    settings = Settings(store=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        for response in (
            client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1}),
            client.post("/counters", json=[{"timestamp": PAST_MINUTE, "a": 1}]),
            client.get("/stats"),
            client.get("/healthz"),
        ):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert "Redis" in response.json()["error"]
        # What is refused before the store is still refused as such.
        assert client.post("/counter", json={"timestamp": T0 + 10_000, "a": 1}).status_code == 400
        assert client.post("/counter", content=b"{").status_code == 400
        # An event with nothing to store needs no store.
        expired = client.post("/counter", json={"timestamp": PAST_HOUR - 1, "a": 1})
        assert expired.json() == {"status": "expired"}


def test_a_hung_redis_leaves_the_write_uncertain_and_applies_nothing_later(
    own_redis: RedisServer,
) -> None:
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(own_redis.url, clock=clock, timeout=0.3)
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            own_redis.pause()
            try:
                started = time.monotonic()
                # Sent, then no word from Redis, nor when asked again: it may
                # have applied, so this is not a 503.
                with pytest.raises(WriteUncertain, match=r"within 0\.3 s.*may or may not"):
                    await store.add([(PAST_MINUTE, {"during": 1})])
                with pytest.raises(StoreUnavailable):
                    await store.ping()
                assert time.monotonic() - started < 2.5
            finally:
                own_redis.resume()
            # Redis now runs the call it had received: past its deadline, it
            # changes nothing.
            await asyncio.sleep(0.2)
            await store.add([(PAST_MINUTE, {"after": 1})])
            assert await store.top(Window.MINUTE, 10) == [("after", 1), ("before", 1)]
        finally:
            await store.close()

    run(check())


def test_a_write_redis_got_to_too_late_is_settled_as_not_applied(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(own_redis.url, clock=clock, timeout=0.5)
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            own_redis.pause()
            # Back after the client's timeout, within the time it gives Redis
            # to say what became of the write: Redis starts the call past its
            # deadline, so it does nothing, and says so.
            loop = asyncio.get_running_loop()
            loop.call_later(0.7, own_redis.resume)
            with pytest.raises(StoreUnavailable, match=r"within 0\.5 s"):
                await store.add([(PAST_MINUTE, {"during": 1})])
            assert await store.top(Window.MINUTE, 10) == [("before", 1)]
        finally:
            own_redis.resume()
            await store.close()

    with caplog.at_level(logging.INFO, logger="tophosts.store"):
        run(check())
    assert "a write got no reply; Redis says it was not applied" in caplog.text


@pytest.mark.parametrize("cut", [False, True], ids=["reply-late", "connection-cut"])
def test_a_write_redis_applied_without_a_timely_reply_is_settled_as_applied(
    redis_url: str, rclient: redis.Redis, caplog: pytest.LogCaptureFixture, cut: bool
) -> None:
    clock = FakeClock()

    async def check() -> None:
        proxy = ReplyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=0.3, prefix="late")
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            # Redis applies it; the reply comes after the timeout (a starved
            # instance, a slow network), or the connection breaks first.
            proxy.hold(b"late-host", seconds=0.6, cut=cut)
            # Applied, so answered as applied: a 503 here would have the
            # client retry, and count it twice.
            assert await store.add([(PAST_MINUTE, {"late-host": 2})]) == (1, 0, 2)
            assert proxy.held == 1
            assert rclient.hlen("late:writes") == 0  # the settled token is gone
            await store.add([(PAST_MINUTE, {"after": 1})])
            top = await store.top(Window.MINUTE, 10)
            assert top == [("late-host", 2), ("after", 1), ("before", 1)]
        finally:
            await store.close()
            await proxy.stop()

    with caplog.at_level(logging.WARNING, logger="tophosts.store"):
        run(check())
    assert "a write got no reply; Redis says it was applied" in caplog.text
    assert rclient.exists("late:writes") == 0  # and closing removed the live one


def test_a_late_reply_still_brings_the_refusal(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()

    async def check() -> None:
        proxy = ReplyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=0.3, prefix="laterefusal")
        try:
            await store.add([(PAST_MINUTE, {"big": MAX_COUNT - 1})])
            # Near the cap, writes go host by host: a first call says so and
            # applies nothing, a second checks each host. (This one also has
            # Redis load that second script, for what follows.)
            await store.add([(PAST_MINUTE, {"warm": 2})])
            # This one is refused, and the reply of the second call is late.
            # The refusal is recorded with the write, so it still comes.
            proxy.hold(b"ok-host", seconds=0.6, nth=2)
            with pytest.raises(EventError, match='"big"'):
                await store.add([(PAST_MINUTE, {"ok-host": 1, "big": 2})])
            assert proxy.held == 1
            assert await store.top(Window.MINUTE, 10) == [("big", MAX_COUNT - 1), ("warm", 2)]
        finally:
            await store.close()
            await proxy.stop()

    with caplog.at_level(logging.WARNING, logger="tophosts.store"):
        run(check())
    assert "a write got no reply; Redis says it was applied" in caplog.text


def test_tokens_of_stopped_instances_are_swept(redis_url: str, rclient: redis.Redis) -> None:
    now = int(rclient.time()[0])
    rclient.hset("sweep:writes", mapping={"gone": f"7:{now - 3600}", "recent": f"8:{now}"})

    async def check() -> None:
        store = RedisStore(redis_url, clock=FakeClock(), prefix="sweep")
        try:
            await store.add([(PAST_MINUTE, {"a": 1})])
            fields = {
                k if isinstance(k, str) else k.decode() for k in rclient.hkeys("sweep:writes")
            }
            assert "gone" not in fields
            assert "recent" in fields
            assert len(fields) == 2  # and this instance's own
        finally:
            await store.close()

    run(check())


def test_the_api_answers_504_when_a_write_is_uncertain(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    settings = Settings(store=own_redis.url, redis_timeout=0.2)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        assert client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1}).status_code == 200
        own_redis.pause()
        try:
            # Sent on a live connection, then silence: uncertain.
            response = client.post("/counters", json=[{"timestamp": PAST_MINUTE, "b": 1}])
            assert response.status_code == 504
            assert "retry-after" not in response.headers
            error = response.json()["error"]
            assert "did not confirm the write" in error
            assert "may or may not have been counted" in error
            # That connection is given up; a new one never gets past its
            # handshake, so this write is never sent: a plain 503.
            response = client.post("/counter", json={"timestamp": PAST_MINUTE, "c": 1})
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        finally:
            own_redis.resume()
        # Redis got the uncertain write only past its deadline: nothing applied.
        assert client.get("/stats").json() == {"top_hosts": {"a": 1}}


def test_service_resumes_when_redis_comes_back(own_redis: RedisServer) -> None:
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(own_redis.url, clock=clock, timeout=0.5)
        try:
            await store.add([(PAST_MINUTE, {"lost": 1})])
            own_redis.kill()
            with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
                await store.add([(PAST_MINUTE, {"refused": 1})])
            with pytest.raises(StoreUnavailable):
                await store.top(Window.MINUTE, 1)
            own_redis.start()  # empty: no persistence
            await store.ping()
            await store.add([(PAST_MINUTE, {"again": 2})])
            assert await store.top(Window.MINUTE, 10) == [("again", 2)]
        finally:
            await store.close()

    run(check())


def test_messages_never_show_the_password() -> None:
    from tophosts.store.redis import describe

    assert describe("redis://:s3cret@cache:6380/2") == "redis://cache:6380/2"
    assert describe("rediss://me:s3cret@cache") == "rediss://cache:6379/0"
    assert describe("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    async def check() -> None:
        store = RedisStore(url, clock=FakeClock(), timeout=0.2)
        with pytest.raises(StoreUnavailable) as info:
            await store.ping()
        assert "s3cret" not in str(info.value)
        await store.close()

    run(check())
