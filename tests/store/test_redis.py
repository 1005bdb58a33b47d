"""The Redis store beyond the shared suites: same answers as memory, layout, failure."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgspec
import pytest
import redis
from starlette.testclient import TestClient

from tests.support.clock import T0, FakeClock
from tests.support.servers import RedisServer, ReplyProxy, free_port
from tophosts import idempotency
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.events import (
    MAX_COUNT,
    Event,
    EventError,
    too_far_ahead,
    too_many_tracked,
    total_too_large,
)
from tophosts.idempotency import Keyed, KeyRefused
from tophosts.store import StoreUnavailable, WriteUncertain
from tophosts.store.memory import MemoryStore
from tophosts.store.redis import RedisStore, commit
from tophosts.store.redis.connection import SOURCES
from tophosts.windows import HOUR, MINUTE, Window, past

pytestmark = pytest.mark.slow  # real redis-servers, faults injected

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start

_prefixes = itertools.count()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the same answers as the memory store (see also test_differential.py) ---------


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


# -- one precedence of refusals, the memory store's ---------------------------
#
# For one request, the first failure wins: an event too far ahead (body order);
# else a host total past 2^53 - 1 (windows in the order the events first name
# them, an event's hour before its minute; hosts in order of appearance); else
# a new host past --max-tracked-hosts (same order). The index is the event's
# position in the request, for a single event too.

OLD = PAST_HOUR + 10  # in the past hour, in a minute no longer live: names only its hour
NOW = T0  # in the current minute: names the current hour, then this minute
PRECEDENCE: dict[str, tuple[int, list[Event], list[Event], EventError]] = {
    # name: (--max-tracked-hosts, already stored, the request, its refusal)
    "overflow-beats-the-cap-in-one-event": (
        1,
        [(NOW, {"a": MAX_COUNT})],
        [(NOW, {"a": 1, "b": 1})],
        total_too_large("a", 0),
    ),
    "overflow-beats-a-cap-named-first": (
        1,
        [(NOW, {"a": MAX_COUNT})],
        [(NOW, {"b": 1}), (NOW, {"a": 1})],
        total_too_large("a", 1),
    ),
    "overflow-in-a-later-window-beats-the-cap-in-an-earlier-one": (
        2,
        [(OLD, {"o1": 1, "o2": 1}), (NOW, {"x": MAX_COUNT})],
        [(OLD, {"new": 1}), (NOW, {"x": 1})],
        total_too_large("x", 1),
    ),
    "overflow-windows-in-the-order-events-name-them": (
        10,
        [(OLD, {"y": MAX_COUNT}), (NOW, {"x": MAX_COUNT})],
        [(OLD, {"z": 1}), (NOW, {"x": 1}), (OLD, {"y": 1})],
        total_too_large("y", 2),
    ),
    "overflow-hosts-in-order-of-appearance": (
        10,
        [(NOW, {"x": MAX_COUNT - 1, "y": MAX_COUNT - 1})],
        [(NOW, {"y": 1, "x": 1}), (NOW, {"x": 1, "y": 1})],
        total_too_large("y", 1),
    ),
    "overflow-names-the-event-that-pushes-it-over": (
        10,
        [(NOW, {"x": MAX_COUNT - 5})],
        [(NOW, {"x": 2}), (OLD, {"x": 9}), (NOW, {"x": 3}), (NOW, {"x": 1})],
        total_too_large("x", 3),
    ),
    "cap-windows-in-the-order-events-name-them": (
        2,
        [(OLD, {"o1": 1}), (NOW, {"o2": 1, "o3": 1})],
        [(OLD, {"p": 1}), (NOW, {"q": 1}), (OLD, {"r": 1})],
        too_many_tracked(HOUR, "r", 2, 2),
    ),
    "cap-the-hour-before-its-minute": (
        2,
        [(PAST_MINUTE, {"o1": 1}), (NOW, {"o2": 1})],
        [(NOW, {"q": 1})],
        too_many_tracked(HOUR, "q", 2, 0),
    ),
    "cap-a-zero-count-brings-no-host": (
        2,
        [(NOW, {"o1": 1})],
        [(NOW, {"p": 1}), (NOW, {"z": 0}), (NOW, {"z": 4})],
        too_many_tracked(HOUR, "z", 2, 2),
    ),
    # A count of 0 is as if absent: it neither brings a host nor orders them.
    "cap-hosts-in-order-of-a-first-count-above-0": (
        2,
        [(NOW, {"o1": 1})],
        [(NOW, {"z": 0, "p": 1}), (NOW, {"z": 4})],
        too_many_tracked(HOUR, "z", 2, 1),
    ),
    "overflow-hosts-in-order-of-a-first-count-above-0": (
        10,
        [(NOW, {"x": MAX_COUNT, "y": MAX_COUNT})],
        [(NOW, {"x": 0, "y": 1}), (NOW, {"x": 1})],
        total_too_large("y", 0),
    ),
    "too-far-ahead-beats-all-in-a-one-event-batch": (
        1,
        [(NOW, {"a": MAX_COUNT})],
        [(NOW + 100_000, {"a": 1, "b": 1})],
        too_far_ahead(NOW + 100_000, NOW, 300, 0),
    ),
    "too-far-ahead-the-first-in-body-order": (
        10,
        [],
        [(NOW, {"a": 1}), (NOW + 400, {"a": 1}), (NOW + 100_000, {"a": 1})],
        too_far_ahead(NOW + 400, NOW, 300, 1),
    ),
}


@pytest.mark.parametrize("case", list(PRECEDENCE))
@pytest.mark.anyio
async def test_a_refused_request_names_the_same_window_host_and_event_in_both_stores(
    make_store: Any, case: str
) -> None:
    cap, stored, request, refusal = PRECEDENCE[case]
    store = make_store(max_tracked_hosts=cap)
    for event in stored:
        await store.add([event])
    with pytest.raises(EventError) as info:
        await store.add(request)
    got = info.value
    assert (got.status, got.message, got.index) == (refusal.status, refusal.message, refusal.index)


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
            assert all(r.index == 0 and '"big"' in r.message for r in refused)
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
    monkeypatch.setattr(commit, "_IN_FLIGHT", 1)
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
#
# The store under test has a short timeout; set-up and checks go through one
# with a wide timeout (WIDE), which a busy machine does not make fail.

WIDE = 10.0


async def status(call: Any) -> int:
    """The HTTP status a store call maps to."""
    try:
        await call
    except EventError as exc:
        return exc.status
    except StoreUnavailable:
        return 503
    except WriteUncertain:
        return 504
    return 200


def times_counted(answer: int) -> tuple[int, ...]:
    """How many times a request so answered may be counted: 200 once, 504 once or not
    at all, anything else never."""
    return {200: (1,), 504: (0, 1)}.get(answer, (0,))


async def counted(store: RedisStore, window: Window = Window.MINUTE) -> dict[str, int]:
    return dict(await store.top(window, 1000))


async def calibrate(store: RedisStore) -> dict[str, int]:
    """Connect ``store`` and read the Redis clock with a write of a host of its own, so
    that the step under test finds both done. On a busy machine that write may miss
    the short timeout: then another. Returns each host written and its answer."""
    answers: dict[str, int] = {}
    for n in range(5):
        host = f"before{n}"
        answers[host] = await status(store.add([(PAST_MINUTE, {host: 1})]))
        if answers[host] == 200:
            return answers
    raise AssertionError(f"no write got through in time to calibrate the store: {answers}")


def check_calibration(got: dict[str, int], answers: dict[str, int], survived: bool = True) -> None:
    for host, answer in answers.items():
        assert got.get(host, 0) in (times_counted(answer) if survived else (0,)), (host, answer)


def redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def until(condition: Callable[[], bool], what: str, timeout: float = WIDE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


def post_applied(client: TestClient, path: str, body: Any) -> None:
    """POST ``body`` until it is applied: on a busy machine a store with a short timeout
    may answer 503, which says that nothing was applied, and to try again."""
    for _ in range(5):
        response = client.post(path, json=body)
        if response.status_code != 503:
            break
    assert response.status_code == 200, response.text


def get_answered(client: TestClient, path: str) -> Any:
    """GET ``path`` (a read: safe to ask again) until the store answers; its JSON."""
    for _ in range(5):
        response = client.get(path)
        if response.status_code != 503:
            break
    assert response.status_code == 200, response.text
    return response.json()


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


def script_calls(server: RedisServer) -> int:
    """How many script calls (EVALSHA) Redis has run."""
    with server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_hung_redis_leaves_the_write_uncertain_and_applies_nothing_later(
    own_redis: RedisServer,
) -> None:
    clock = FakeClock()

    async def check() -> None:
        store = RedisStore(own_redis.url, clock=clock, timeout=0.3)
        direct = RedisStore(own_redis.url, clock=clock, timeout=WIDE)
        try:
            calibration = await calibrate(store)
            calls = script_calls(own_redis)
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
            # Redis now runs the call it had received (the settle's never got
            # past the handshake): past its deadline, it changes nothing.
            await until(lambda: script_calls(own_redis) > calls, "Redis ran the held write")
            assert script_calls(own_redis) == calls + 1
            counts = await counted(direct)
            assert "during" not in counts
            check_calibration(counts, calibration)
            assert set(counts) == set(calibration)
        finally:
            await store.close()
            await direct.close()

    run(check())


def test_a_write_redis_got_to_too_late_is_settled_as_not_applied(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    timeout = 1.0  # for Redis to answer the settle within the timeout, once resumed

    async def check() -> None:
        store = RedisStore(own_redis.url, clock=clock, timeout=timeout)
        direct = RedisStore(own_redis.url, clock=clock, timeout=WIDE)
        try:
            calibration = await calibrate(store)
            own_redis.pause()
            # Back after the client's timeout, within the time it gives Redis
            # to say what became of the write (another timeout): Redis starts
            # the call past its deadline, so it does nothing, and says so.
            # 0.4 s after the timeout, 0.6 s before the settle gives up.
            loop = asyncio.get_running_loop()
            loop.call_later(timeout * 1.4, own_redis.resume)
            with pytest.raises(StoreUnavailable, match=r"within 1 s"):
                await store.add([(PAST_MINUTE, {"during": 1})])
            counts = await counted(direct)
            check_calibration(counts, calibration)
            assert set(counts) == set(calibration)
        finally:
            own_redis.resume()
            await store.close()
            await direct.close()

    with caplog.at_level(logging.INFO, logger="tophosts.store"):
        run(check())
    assert "a write got no reply; Redis says it was not applied" in caplog.text


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
    settings = Settings(store=own_redis.url, redis_timeout=0.5)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        post_applied(client, "/counter", {"timestamp": PAST_MINUTE, "a": 1})
        own_redis.pause()
        try:
            # Sent on a live connection, then silence: uncertain.
            response = client.post("/counters", json=[{"timestamp": PAST_MINUTE, "b": 1}])
            assert response.status_code == 504
            assert "retry-after" not in response.headers
            error = response.json()["error"]
            assert "did not confirm the write" in error
            assert "may or may not have been counted" in error
            assert "a retry without a key may count them twice" in error
            assert "send each request with an Idempotency-Key" in error
            # That connection is given up; a new one never gets past its
            # handshake, so this write is never sent: a plain 503.
            response = client.post("/counter", json={"timestamp": PAST_MINUTE, "c": 1})
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        finally:
            own_redis.resume()
        # Redis got the uncertain write only past its deadline: nothing applied.
        assert get_answered(client, "/stats") == {"top_hosts": {"a": 1}}


def test_a_504_is_resolved_by_a_retry_with_its_key(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    settings = Settings(store=own_redis.url, redis_timeout=0.2)
    key = {"idempotency-key": "uncertain"}
    body = [{"timestamp": PAST_MINUTE, "b": 1}]
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        assert client.post("/counter", json={"timestamp": PAST_MINUTE, "a": 1}).status_code == 200
        own_redis.pause()
        try:
            response = client.post("/counters", json=body, headers=key)
            assert response.status_code == 504
            error = response.json()["error"]
            assert "retry with the same Idempotency-Key to learn the true outcome" in error
        finally:
            own_redis.resume()
        # Redis got the write past its deadline: not applied, so the retry applies it.
        retry = client.post("/counters", json=body, headers=key)
        assert (retry.status_code, retry.json()) == (
            200,
            {"status": "ok", "accepted": 1, "expired": 0},
        )
        assert "idempotent-replayed" not in retry.headers
        again = client.post("/counters", json=body, headers=key)
        assert again.headers["idempotent-replayed"] == "true"
        assert client.get("/stats").json() == {"top_hosts": {"a": 1, "b": 1}}


def test_a_redis_loading_its_data_gets_503_on_every_route_and_nothing_applied(
    own_redis: RedisServer, clock: FakeClock
) -> None:
    settings = Settings(store=own_redis.url, redis_timeout=0.5)
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        post_applied(client, "/counter", {"timestamp": PAST_MINUTE, "a": 1})
        # A real restart into a long load: Redis answers every command -LOADING.
        own_redis.restart_loading(seconds=4)
        started = time.monotonic()
        for response in (
            client.post("/counter", json={"timestamp": PAST_MINUTE, "b": 1}),
            client.post("/counters", json=[{"timestamp": PAST_MINUTE, "b": 1}]),
            client.get("/stats"),
            client.get("/healthz"),
        ):
            # Not 504: a -LOADING reply means the write never ran.
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert "is loading its data into memory" in response.json()["error"]
        assert own_redis.loading(), "the load ended before the test was done"
        assert time.monotonic() - started < 2  # no waiting on a settle
        deadline = time.monotonic() + 30
        while own_redis.loading():
            assert time.monotonic() < deadline, "Redis did not finish loading"
            time.sleep(0.05)
        post_applied(client, "/counter", {"timestamp": PAST_MINUTE, "c": 1})
        assert get_answered(client, "/stats") == {"top_hosts": {"a": 1, "c": 1}}


def test_service_resumes_when_redis_comes_back(own_redis: RedisServer) -> None:
    clock = FakeClock()

    async def check() -> None:
        # Nothing here waits on the timeout: Redis down refuses at once.
        store = RedisStore(own_redis.url, clock=clock, timeout=WIDE)
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


# -- fault injection at every step of a write ------------------------------------
#
# A proxy between the store and Redis (ReplyProxy) delays, drops or cuts one
# chosen message: a write's request or its reply, the settle's, the settle's
# retry's; or answers one with -LOADING in Redis's place. Whatever the fault: a
# request answered 200 is counted exactly once, one answered 503 (or refused)
# not at all, and 504 comes only where the outcome cannot be known.
#
# Timing. Only the step under test goes through the store with the short
# timeout T; the set-up and the checks go through a store with a wide one
# (WIDE). Every delay is a share of T, at least 0.1 T (50 ms) from any
# threshold of the store, and each case's path is planned: which faults strike,
# how many settle calls the store sends, what each request gets. A busy machine
# can still hold the store up for longer than it gives Redis to settle a write
# (T): the store then answers 504, rightly (it could not learn the outcome), or
# skips a retry it had no time left for, or settles a reply that came too late
# for it. Such an attempt must satisfy every invariant all the same, and
# nothing but timing may change an answer: only to 504 for the whole call. It
# is reported (a BusyMachine warning) and the case runs again, up to ATTEMPTS
# times: each case must take its planned path once.

T = 0.5  # the timeout of the store under test
ATTEMPTS = 3  # runs of a case that a busy machine may turn off its planned path
LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"


class BusyMachine(UserWarning):
    """A fault case left its planned path for lack of time, and runs again."""


def sha(script: str) -> bytes:
    """The SHA1 a script is called by (EVALSHA), to aim a fault at one step of a write."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


ADD, CAREFUL, SETTLE = (sha(SOURCES[name]) for name in ("add", "add_carefully", "settle"))


def load_scripts(client: redis.Redis) -> None:
    """Load the write's scripts (and the sweep, that calibrating runs), so that no
    NOSCRIPT round trip takes a fault meant for a step, or time."""
    for name in ("add", "add_carefully", "settle", "sweep"):
        client.script_load(SOURCES[name])


def markers(step: str, careful: bool) -> tuple[bytes, ...]:
    """What the request of a step of the write carries: "check" is the first call
    (which, near 2^53 - 1, only says to go careful), "write" the call that applies."""
    if step == "settle":
        return (SETTLE,)
    return (CAREFUL if careful and step == "write" else ADD, b"mark")


Plan = tuple[str, str, str, float]
"""(step, "request" or "reply", action, seconds in timeouts)."""
W_CUT: Plan = ("write", "reply", "cut", 0)
S_CUT: Plan = ("settle", "reply", "cut", 0)


class Case(NamedTuple):
    plans: list[Plan]  # the faults, in the order they strike
    strikes: int  # how many of them strike
    settles: int  # settle calls the store sends
    outcome: int  # what each request gets


FAULTS: dict[str, Case] = {
    "write-reply-late": Case([("write", "reply", "delay", 0.3)], 1, 0, 200),
    "write-reply-past-the-timeout": Case([("write", "reply", "delay", 1.5)], 1, 1, 200),
    "write-reply-dropped": Case([("write", "reply", "drop", 0)], 1, 1, 200),
    "write-reply-cut": Case([W_CUT], 1, 1, 200),
    "write-cut-before-redis": Case([("write", "request", "cut", 0)], 1, 1, 503),
    # Past the start deadline (0.5 T), and the reply back before the timeout.
    "write-reaches-redis-past-its-deadline": Case([("write", "request", "delay", 0.6)], 1, 0, 503),
    "write-reaches-redis-after-the-settle": Case([("write", "request", "drop", 0)], 1, 1, 503),
    # Redis loading its data throughout: -LOADING means nothing ran, no settle.
    "write-answered-loading": Case(
        [("write", "request", "answer", 0), *[("settle", "request", "answer", 0)] * 8], 1, 0, 503
    ),
    "settle-reply-cut": Case([W_CUT, S_CUT], 2, 2, 200),
    "settle-reply-dropped": Case([W_CUT, ("settle", "reply", "drop", 0)], 2, 2, 200),
    # Past the share of the timeout a settle call gets (0.5 T).
    "settle-reply-late": Case([W_CUT, ("settle", "reply", "delay", 0.7)], 2, 2, 200),
    "settle-cut-before-redis": Case([W_CUT, ("settle", "request", "cut", 0)], 2, 2, 200),
    "settle-answered-loading": Case([W_CUT, ("settle", "request", "answer", 0)], 2, 2, 200),
    "settle-and-its-retry-cut": Case([W_CUT, S_CUT, S_CUT], 3, 3, 200),
    "settle-reply-cut-for-a-write-not-applied": Case(
        [("write", "request", "cut", 0), S_CUT], 2, 2, 503
    ),
    # Two settle calls of half the timeout each: the time is up before a third.
    "every-settle-reply-dropped": Case(
        [("write", "reply", "drop", 0), *[("settle", "reply", "drop", 0)] * 4], 3, 2, 504
    ),
    # Near 2^53 - 1 only: the first call said "check host by host" and its reply was lost.
    "check-reply-cut": Case([("check", "reply", "cut", 0)], 1, 1, 503),
}


class Attempt(NamedTuple):
    answers: list[int]  # what each request got
    struck: int  # faults of the plan that struck
    settles: int  # settle calls the store sent


def on_its_path(name: str, planned: Attempt, attempt: Callable[[], Attempt]) -> None:
    """Run ``attempt`` (which checks the invariants) until it takes its ``planned`` path, at
    most ATTEMPTS times. Nothing but timing may turn it off that path, and the only
    answer timing may change is to 504, for the whole call."""
    for n in range(1, ATTEMPTS + 1):
        got = attempt()
        if got == planned:
            return
        assert got.answers in (planned.answers, [504] * len(planned.answers)), (got, planned)
        warnings.warn(
            BusyMachine(f"{name}, attempt {n} of {ATTEMPTS}: got {got}, planned {planned}"),
            stacklevel=2,
        )
    pytest.fail(f"{name}: off its planned path in each of {ATTEMPTS} attempts (see the warnings)")


@pytest.mark.parametrize("size", [1, 4], ids=["one-request", "group-commit"])
@pytest.mark.parametrize(
    ("fault", "careful"),
    [
        *((name, False) for name in FAULTS if not name.startswith("check")),
        *((name, True) for name in FAULTS),
    ],
    ids=lambda value: {False: "add", True: "add-carefully"}.get(value, value),
)
def test_a_fault_at_any_step_of_a_write_leaves_200_counted_once_and_503_not_at_all(
    redis_url: str,
    rclient: redis.Redis,
    fault: str,
    careful: bool,
    size: int,
    request: pytest.FixtureRequest,
) -> None:
    case = FAULTS[fault]
    load_scripts(rclient)
    clock = FakeClock()
    # Each request counts a host of its own; they ride in one call (a group commit).
    requests: list[list[Event]] = [[(PAST_MINUTE, {"mark": 1, "r0": 1})]]
    requests += [[(PAST_MINUTE, {f"r{i}": 1})] for i in range(1, size)]
    expected = [case.outcome] * size
    if careful and size > 1:
        requests[1] = [(PAST_MINUTE, {"r1": 1, "big": 2})]  # refused, on its own
        expected[1] = 400 if case.outcome == 200 else case.outcome
    planned = Attempt(expected, case.strikes, case.settles)

    async def check(prefix: str) -> Attempt:
        proxy = ReplyProxy(redis_port(redis_url))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix=prefix)
        direct = RedisStore(redis_url, clock=clock, timeout=WIDE, prefix=prefix)
        try:
            calibration = await calibrate(store)
            if careful:  # every write of this minute now goes host by host
                await direct.add([(PAST_MINUTE, {"big": MAX_COUNT - 1})])
            settles = proxy.seen(SETTLE)
            faults = [
                proxy.fault(
                    *markers(step, careful), on=on, action=action, seconds=k * T, reply=LOADING
                )
                for step, on, action, k in case.plans
            ]
            answers = await asyncio.gather(*(status(store.add(r)) for r in requests))
            got = Attempt(
                answers, sum(f.struck.is_set() for f in faults), proxy.seen(SETTLE) - settles
            )
            # Requests held on the way reach Redis now, too late to change anything.
            for held in faults:
                if (
                    held.struck.is_set()
                    and held.on == "request"
                    and held.action in ("delay", "drop")
                ):
                    held.release()
                    async with asyncio.timeout(WIDE):
                        await held.answered.wait()
            counts = await counted(direct)
            for i, answer in enumerate(answers):
                assert counts.get(f"r{i}", 0) in times_counted(answer)
                # What happened: every case but the 503 ones has the write run at
                # Redis (a refused request aside), the 504 one too.
                ran = case.outcome != 503 and not (careful and i == 1)
                assert counts.get(f"r{i}", 0) == ran
            assert counts.get("mark", 0) == counts.get("r0", 0)
            check_calibration(counts, calibration)
            assert counts.get("big", 0) == (MAX_COUNT - 1 if careful else 0)
            return got
        finally:
            await store.close()
            await direct.close()
            await proxy.stop()

    def attempt() -> Attempt:
        prefix = f"fault{next(_prefixes)}"
        got: Attempt = run(check(prefix))
        # Every write token's field is gone once the stores are closed.
        assert not rclient.exists(f"{prefix}:writes")
        return got

    on_its_path(request.node.name, planned, attempt)


# Redis killed between two steps of a write: once the last fault of the plan
# has struck, Redis is killed (SIGKILL), and started again with what its AOF
# kept (every write is fsynced before its reply), or empty, or not at all.
# Redis must be back and answer the settle within the time the store gives it:
# on a busy machine it may not (504), and the case runs again (see above).
KILLS: dict[str, tuple[list[Plan], str, int]] = {
    "after-the-write-ran-back-with-its-data": ([("write", "reply", "drop", 0)], "aof", 200),
    "after-the-write-ran-back-empty": ([("write", "reply", "drop", 0)], "empty", 503),
    "after-the-write-ran-never-back": ([("write", "reply", "drop", 0)], "never", 504),
    "before-redis-got-the-write-back-with-its-data": (
        [("write", "request", "drop", 0)],
        "aof",
        503,
    ),
    "after-the-settle-ran-back-with-its-data": (
        [W_CUT, ("settle", "reply", "drop", 0)],
        "aof",
        200,
    ),
}


@pytest.mark.parametrize("careful", [False, True], ids=["add", "add-carefully"])
@pytest.mark.parametrize("kill", list(KILLS))
def test_redis_killed_between_two_steps_of_a_write_leaves_200_counted_and_503_not(
    kill: str, careful: bool, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import redis_binary

    plans, restart, outcome = KILLS[kill]
    server = RedisServer(redis_binary(), appendonly=restart != "empty")
    clock = FakeClock()
    requests: list[list[Event]] = [
        [(PAST_MINUTE, {"mark": 1, "r0": 1})],
        [(PAST_MINUTE, {"r1": 1})],
    ]
    expected = [outcome, outcome]
    if careful:
        requests[1] = [(PAST_MINUTE, {"r1": 1, "big": 2})]
        expected[1] = 400 if outcome == 200 else outcome
    planned = Attempt(expected, len(plans), 0)

    async def check(prefix: str) -> Attempt:
        proxy = ReplyProxy(server.port)
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix=prefix)
        direct = RedisStore(server.url, clock=clock, timeout=WIDE, prefix=prefix)
        try:
            with server.client() as client:
                load_scripts(client)
            calibration = await calibrate(store)
            if careful:
                await direct.add([(PAST_MINUTE, {"big": MAX_COUNT - 1})])
            faults = [
                proxy.fault(*markers(step, careful), on=on, action=action, seconds=k * T)
                for step, on, action, k in plans
            ]

            async def kill_redis() -> None:
                async with asyncio.timeout(WIDE):
                    await faults[-1].struck.wait()
                await asyncio.to_thread(server.kill)
                if restart != "never":
                    await asyncio.to_thread(server.start)

            killing = asyncio.create_task(kill_redis())
            answers = await asyncio.gather(*(status(store.add(r)) for r in requests))
            await killing
            if restart == "never":  # for a look at what it kept
                await asyncio.to_thread(server.start)
            counts = await counted(direct)
            survived = restart != "empty"
            for i, answer in enumerate(answers):
                assert counts.get(f"r{i}", 0) in times_counted(answer)
                # What happened: the write ran unless it was stopped on its way
                # (a refused request aside), and survived unless Redis came back empty.
                ran = plans[0][1] == "reply" and not (careful and i == 1)
                assert counts.get(f"r{i}", 0) == (ran and survived)
            check_calibration(counts, calibration, survived)
            assert counts.get("big", 0) == (MAX_COUNT - 1 if careful and survived else 0)
            return Attempt(answers, sum(f.struck.is_set() for f in faults), 0)
        finally:
            await store.close()
            await direct.close()
            await proxy.stop()

    try:
        on_its_path(request.node.name, planned, lambda: run(check(f"kill{next(_prefixes)}")))
    finally:
        server.stop()


def test_the_writes_hash_stays_small_however_many_writes_are_settled(
    redis_url: str, rclient: redis.Redis, request: pytest.FixtureRequest
) -> None:
    clock = FakeClock()
    load_scripts(rclient)
    planned = Attempt([200] * 4, 4, 4)  # each write's reply cut, each settled as applied

    async def check(prefix: str) -> Attempt:
        proxy = ReplyProxy(redis_port(redis_url))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix=prefix)
        direct = RedisStore(redis_url, clock=clock, timeout=WIDE, prefix=prefix)
        try:
            calibration = await calibrate(store)
            settles = proxy.seen(SETTLE)
            faults, answers = [], []
            for i in range(4):
                faults.append(proxy.fault(f"w{i}".encode(), action="cut"))
                answers.append(await status(store.add([(PAST_MINUTE, {f"w{i}": 1})])))
            got = Attempt(
                answers, sum(f.struck.is_set() for f in faults), proxy.seen(SETTLE) - settles
            )
            if got == planned:
                # Each settled token's field goes once its requests are answered,
                # without waiting for close().
                await until(lambda: not rclient.hlen(f"{prefix}:writes"), "no write fields")
            counts = await counted(direct)
            for i, answer in enumerate(answers):
                assert counts.get(f"w{i}", 0) in times_counted(answer)
                assert counts.get(f"w{i}", 0) == 1  # cut once Redis had run it
            check_calibration(counts, calibration)
            return got
        finally:
            await store.close()
            await direct.close()
            await proxy.stop()

    def attempt() -> Attempt:
        prefix = f"small{next(_prefixes)}"
        got: Attempt = run(check(prefix))
        assert not rclient.exists(f"{prefix}:writes")
        return got

    on_its_path(request.node.name, planned, attempt)


# -- idempotency keys through the proxy --------------------------------------------


def keyed(name: str, events: list[Event]) -> Keyed:
    """The key ``name`` for ``events`` as POST /counters sends them."""
    body = msgspec.json.encode([{"timestamp": ts, **counts} for ts, counts in events])
    return idempotency.digest(name.encode()), idempotency.fingerprint(b"/counters", body)


async def outcome(call: Any) -> tuple[int, bool]:
    """The HTTP status a store call maps to, and whether it is a replay."""
    try:
        added = await call
    except KeyRefused as exc:
        return exc.status, False
    except EventError as exc:
        return exc.status, False
    except StoreUnavailable:
        return 503, False
    except WriteUncertain:
        return 504, False
    return 200, added.replayed


@pytest.mark.parametrize(
    ("fault", "careful"),
    [
        *((name, False) for name in FAULTS if not name.startswith("check")),
        *((name, True) for name in FAULTS),
    ],
    ids=lambda value: {False: "add", True: "add-carefully"}.get(value, value),
)
def test_whatever_a_keyed_write_got_a_retry_with_its_key_counts_it_exactly_once(
    redis_url: str, rclient: redis.Redis, fault: str, careful: bool
) -> None:
    case = FAULTS[fault]
    plans, strikes, first = case.plans, case.strikes, case.outcome
    prefix = f"keyedfault{next(_prefixes)}"
    load_scripts(rclient)
    clock = FakeClock()
    requests: list[list[Event]] = [[(PAST_MINUTE, {"mark": 1, "r0": 1})]]
    requests += [[(PAST_MINUTE, {f"r{i}": 1})] for i in range(1, 4)]
    if careful:
        requests[1] = [(PAST_MINUTE, {"r1": 1, "big": 2})]  # refused, on its own
    keys = [keyed(f"k{i}", r) for i, r in enumerate(requests)]

    async def check() -> None:
        proxy = ReplyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix=prefix)
        other = RedisStore(redis_url, clock=clock, prefix=prefix)  # another instance
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            if careful:
                await other.add([(PAST_MINUTE, {"big": MAX_COUNT - 1})])
            faults = [
                proxy.fault(
                    *markers(step, careful), on=on, action=action, seconds=k * T, reply=LOADING
                )
                for step, on, action, k in plans
            ]
            answers = await asyncio.gather(
                *(outcome(store.add(r, k)) for r, k in zip(requests, keys, strict=True))
            )
            assert all(f.struck.is_set() for f in faults[:strikes])
            for held in faults:
                if (
                    held.struck.is_set()
                    and held.on == "request"
                    and held.action in ("delay", "drop")
                ):
                    held.release()
                    async with asyncio.timeout(5):
                        await held.answered.wait()
            ran = await counted(other)
            # The client retries every request with its key, on the other instance.
            retries = await asyncio.gather(
                *(outcome(other.add(r, k)) for r, k in zip(requests, keys, strict=True))
            )
            got = await counted(other)
            for i, (answer, retry) in enumerate(zip(answers, retries, strict=True)):
                refused = careful and i == 1
                assert answer == ((400 if refused and first == 200 else first), False)
                if refused:
                    assert retry == (400, False)  # tried afresh, refused afresh
                    assert got.get("r1", 0) == 0
                    continue
                # A write that ran is replayed; one that did not is applied now.
                assert retry == (200, bool(ran.get(f"r{i}")))
                assert got[f"r{i}"] == 1
            assert got["mark"] == 1
            assert got["before"] == 1
        finally:
            await store.close()
            await other.close()
            await proxy.stop()

    run(check())


def test_a_write_whose_reply_is_lost_is_a_replay_for_a_retry_on_another_instance(
    redis_url: str, rclient: redis.Redis
) -> None:
    load_scripts(rclient)
    clock = FakeClock()
    events: list[Event] = [(PAST_MINUTE, {"mark": 1})]
    key = keyed("lost-reply", events)

    async def check() -> None:
        proxy = ReplyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix="lost")
        other = RedisStore(redis_url, clock=clock, prefix="lost")
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            fault = proxy.fault(ADD, b"mark", action="drop")  # Redis ran it; no reply
            first = asyncio.create_task(outcome(store.add(events, key)))
            async with asyncio.timeout(5):
                await fault.struck.wait()
            # The client gives up waiting, and retries elsewhere while the first waits.
            assert not first.done()
            assert await outcome(other.add(events, key)) == (200, True)
            # And the first instance, once it has settled the write, answers as applied.
            assert await first == (200, False)
            assert await outcome(store.add(events, key)) == (200, True)
            assert await counted(other) == {"before": 1, "mark": 1}
        finally:
            await store.close()
            await other.close()
            await proxy.stop()

    run(check())


def test_a_settle_learns_each_keyed_requests_own_outcome(
    redis_url: str, rclient: redis.Redis
) -> None:
    load_scripts(rclient)
    clock = FakeClock()
    requests: list[list[Event]] = [
        [(PAST_MINUTE, {"mark": 1, "again": 1})],  # its key is kept already: a replay
        [(PAST_MINUTE, {"other": 1})],  # its key is kept for another request: 422
        [(PAST_MINUTE, {"fresh": 1})],
        [(PAST_MINUTE, {"full": 1})],  # one new key too many
    ]
    keys = [keyed(f"s{i}", r) for i, r in enumerate(requests)]
    before: list[Event] = [(PAST_MINUTE, {"something": 1})]

    async def check() -> None:
        proxy = ReplyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
        await proxy.start()
        limits = {"max_idempotency_keys": 3}
        store = RedisStore(proxy.url, clock=clock, timeout=T, prefix="learn", **limits)
        other = RedisStore(redis_url, clock=clock, prefix="learn", **limits)
        try:
            assert await outcome(other.add(requests[0], keys[0])) == (200, False)
            assert await outcome(other.add(before, keyed("s1", before))) == (200, False)
            # The replay sends the call down the careful path; its reply is cut.
            fault = proxy.fault(CAREFUL, b"mark", action="cut")
            answers = await asyncio.gather(
                *(outcome(store.add(r, k)) for r, k in zip(requests, keys, strict=True))
            )
            assert fault.struck.is_set()
            assert answers == [(200, True), (422, False), (200, False), (429, False)]
            got = await counted(other)
            assert got == {"mark": 1, "again": 1, "something": 1, "fresh": 1}
        finally:
            await store.close()
            await other.close()
            await proxy.stop()

    run(check())


@pytest.mark.parametrize("kill", list(KILLS))
def test_redis_killed_mid_keyed_write_then_a_retry_with_its_key_counts_it_once(kill: str) -> None:
    from tests.conftest import redis_binary

    plans, restart, first = KILLS[kill]
    server = RedisServer(redis_binary(), appendonly=restart != "empty")
    clock = FakeClock()
    events: list[Event] = [(PAST_MINUTE, {"mark": 1})]
    key = keyed("killed", events)

    async def check() -> None:
        proxy = ReplyProxy(server.port)
        await proxy.start()
        store = RedisStore(proxy.url, clock=clock, timeout=0.5, prefix="kill")
        other = RedisStore(server.url, clock=clock, prefix="kill")
        try:
            await store.add([(PAST_MINUTE, {"before": 1})])
            with server.client() as client:
                load_scripts(client)
            faults = [
                proxy.fault(*markers(step, False), on=on, action=action, seconds=k)
                for step, on, action, k in plans
            ]

            async def kill_redis() -> None:
                async with asyncio.timeout(5):
                    await faults[-1].struck.wait()
                await asyncio.to_thread(server.kill)
                if restart != "never":
                    await asyncio.to_thread(server.start)

            killing = asyncio.create_task(kill_redis())
            answer = await outcome(store.add(events, key))
            await killing
            assert answer == (first, False)
            if restart == "never":
                await asyncio.to_thread(server.start)
            # Whatever the answer was, a retry with the key gets the true outcome.
            kept = (await counted(other)).get("mark", 0)
            assert await outcome(other.add(events, key)) == (200, bool(kept))
            assert (await counted(other))["mark"] == 1
        finally:
            await store.close()
            await other.close()
            await proxy.stop()

    try:
        run(check())
    finally:
        server.stop()
