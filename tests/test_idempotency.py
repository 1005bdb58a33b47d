"""Idempotency keys through the HTTP API, for every store: replays, conflicts, the key
in flight, expiry on a fake clock, the cap; then real processes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import httpx
import msgspec
import pytest
import redis
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0, FakeClock
from tests.support.servers import Server
from tests.support.threads import in_threads
from tophosts import idempotency
from tophosts.app import TopHosts, create_app
from tophosts.config import Settings
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start
EVENT = {"timestamp": PAST_MINUTE, "a.com": 2, "b.com": 1}
BATCH = [EVENT, {"timestamp": PAST_HOUR - 10, "old.com": 1}, {"timestamp": PAST_HOUR, "h.com": 3}]


def post(client: TestClient, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"idempotency-key": key} if key is not None else {}
    response: httpx.Response = client.post(path, content=msgspec.json.encode(body), headers=headers)
    return response


def hour(client: TestClient) -> dict[str, int]:
    return dict(
        client.get("/stats", params={"stats_type": "hour", "limit": 100}).json()["top_hosts"]
    )


def minute(client: TestClient) -> dict[str, int]:
    return dict(client.get("/stats", params={"limit": 100}).json()["top_hosts"])


def metric(client: TestClient, line: str) -> float:
    for got in client.get("/metrics").text.splitlines():
        if got.startswith(line + " "):
            return float(got.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line} in /metrics")


CONFLICTS = "tophosts_idempotency_conflicts_total"


# -- replays ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "answer"),
    [
        ("/counter", EVENT, {"status": "ok"}),
        ("/counter", {"timestamp": PAST_HOUR - 1, "old.com": 1}, {"status": "expired"}),
        ("/counters", BATCH, {"status": "ok", "accepted": 2, "expired": 1}),
        ("/counters", [BATCH[1]], {"status": "ok", "accepted": 0, "expired": 1}),
    ],
    ids=["counter-ok", "counter-expired", "counters", "counters-all-expired"],
)
def test_a_retry_gets_the_first_outcome_again_and_applies_nothing(
    make_client: MakeClient, path: str, body: Any, answer: dict[str, Any]
) -> None:
    client = make_client()
    first = post(client, path, body, "retry-me")
    assert (first.status_code, first.json()) == (200, answer)
    assert "idempotent-replayed" not in first.headers
    counted = (minute(client), hour(client))
    for _ in range(3):
        again = post(client, path, body, "retry-me")
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == "application/json"
    assert (minute(client), hour(client)) == counted
    assert metric(client, "tophosts_idempotent_replays_total") == 3
    accepted = 'tophosts_events_total{result="accepted"}'
    assert metric(client, accepted) == answer.get("accepted", answer["status"] == "ok")
    assert metric(client, "tophosts_idempotency_keys") == 1


def test_keys_are_per_store_not_per_route_and_apart_from_requests_without_one(
    make_client: MakeClient,
) -> None:
    client = make_client()
    assert post(client, "/counter", EVENT, "k1").json() == {"status": "ok"}
    assert post(client, "/counter", EVENT, "k2").headers.get("idempotent-replayed") is None
    assert post(client, "/counter", EVENT).status_code == 200
    assert post(client, "/counter", EVENT).status_code == 200
    assert minute(client) == {"a.com": 8, "b.com": 4}
    # The same body on the other route is another request: 422.
    assert post(client, "/counters", [EVENT], "k1").status_code == 422


def test_a_refusal_is_not_kept_and_a_retry_is_tried_afresh(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(max_skew=60)
    ahead = {"timestamp": T0 + 100, "soon.com": 1}
    refused = post(client, "/counter", ahead, "later")
    assert refused.status_code == 400
    assert "ahead of the server clock" in refused.json()["error"]
    assert post(client, "/counters", [EVENT, ahead], "later-batch").json()["index"] == 1
    assert metric(client, "tophosts_idempotency_keys") == 0
    clock.advance(50)  # the event is now within --max-skew
    applied = post(client, "/counter", ahead, "later")
    assert (applied.status_code, applied.json()) == (200, {"status": "ok"})
    assert "idempotent-replayed" not in applied.headers
    assert post(client, "/counters", [EVENT, ahead], "later-batch").json()["accepted"] == 2
    clock.set(T0 - T0 % 60 + 180)  # the event's minute is now the past one
    assert minute(client) == {"soon.com": 2}


def test_a_refusal_for_the_host_cap_is_tried_afresh_once_the_window_rolls_off(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(max_tracked_hosts=1)
    assert post(client, "/counter", {"timestamp": T0, "a": 1}).status_code == 200
    assert post(client, "/counter", {"timestamp": T0, "b": 1}, "b").status_code == 429
    clock.set(T0 - T0 % 3600 + 3600)  # a new hour: room again
    assert post(client, "/counter", {"timestamp": T0 + 3000, "b": 1}, "b2").status_code == 200
    again = post(client, "/counter", {"timestamp": T0 + 3000, "b": 1}, "b2")
    assert again.headers["idempotent-replayed"] == "true"


def test_the_same_key_for_another_request_is_422_and_nothing_is_applied(
    make_client: MakeClient,
) -> None:
    client = make_client()
    assert post(client, "/counter", EVENT, "once").status_code == 200
    for path, body in [
        ("/counter", {**EVENT, "a.com": 3}),
        ("/counter", {"a.com": 2, "b.com": 1, "timestamp": PAST_MINUTE}),  # other bytes
        ("/counters", [EVENT]),
    ]:
        refused = post(client, path, body, "once")
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]
        assert 'Idempotency-Key "once" was used for a different request' in message
        assert "retry-after" not in refused.headers
    assert minute(client) == {"a.com": 2, "b.com": 1}
    assert metric(client, CONFLICTS + '{reason="fingerprint"}') == 3
    # The first request is still replayed as such.
    assert post(client, "/counter", EVENT, "once").headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"", "this one is empty"),
        (b"x" * 256, "256 bytes long"),
        (b"two words", "byte 0x20 at position 3"),
        ("caf\u00e9".encode(), "byte 0xc3 at position 3"),
        (b"tab\there", "byte 0x09 at position 3"),
    ],
    ids=["empty", "too-long", "space", "non-ascii", "control"],
)
def test_a_bad_key_is_400_naming_the_rule(
    make_client: MakeClient, value: bytes, words: str
) -> None:
    client = make_client()
    for path, body in [("/counter", EVENT), ("/counters", [EVENT])]:
        response = client.post(
            path, content=msgspec.json.encode(body), headers=[(b"idempotency-key", value)]
        )
        assert response.status_code == 400
        message = response.json()["error"]
        assert "1 to 255 visible ASCII characters" in message
        assert words in message
    assert minute(client) == {}


def test_the_longest_key_and_every_visible_character_are_accepted(
    make_client: MakeClient,
) -> None:
    client = make_client()
    for key in ["k" * 255, "".join(map(chr, range(0x21, 0x7F)))]:
        assert post(client, "/counter", EVENT, key).status_code == 200
        assert post(client, "/counter", EVENT, key).headers["idempotent-replayed"] == "true"
    assert minute(client) == {"a.com": 4, "b.com": 2}


def test_two_keys_in_one_request_are_400(make_client: MakeClient) -> None:
    client = make_client()
    response = client.post(
        "/counter",
        content=msgspec.json.encode(EVENT),
        headers=[(b"idempotency-key", b"a"), (b"idempotency-key", b"a")],
    )
    assert response.status_code == 400
    assert "more than one Idempotency-Key header" in response.json()["error"]


# -- expiry and the cap -------------------------------------------------------------


def test_a_key_is_kept_for_the_ttl_then_a_retry_applies_afresh(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(idempotency_ttl=150)  # kept for 3 minutes after its own
    body = {"timestamp": PAST_HOUR + 5, "h.com": 1}  # live until T0's hour ends
    assert post(client, "/counter", body, "short").status_code == 200
    expires = T0 - T0 % 60 + 60 + 180
    clock.set(expires - 0.5)
    assert post(client, "/counter", body, "short").headers["idempotent-replayed"] == "true"
    assert metric(client, "tophosts_idempotency_keys") == 1
    clock.set(expires)
    assert metric(client, "tophosts_idempotency_keys") == 0
    fresh = post(client, "/counter", body, "short")
    assert (fresh.status_code, fresh.json()) == (200, {"status": "ok"})
    assert "idempotent-replayed" not in fresh.headers
    assert hour(client) == {"h.com": 2}


def test_by_default_a_key_outlives_every_window_its_events_reached(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(max_skew=300)
    ahead = {"timestamp": T0 + 300, "far.com": 1}  # its hour is asked about until then:
    lives_until = T0 + 300 - (T0 + 300) % 3600 + 7200
    assert post(client, "/counter", ahead, "far").status_code == 200
    clock.set(lives_until - 1)
    assert hour(client) == {"far.com": 1}
    assert post(client, "/counter", ahead, "far").headers["idempotent-replayed"] == "true"
    # 2 h plus --max-skew after its minute (and up to a minute more), the key is gone,
    # and so is every window the event reached: a retry is expired.
    clock.set(T0 - T0 % 60 + 60 + 7500)
    late = post(client, "/counter", ahead, "far")
    assert (late.json(), late.headers.get("idempotent-replayed")) == ({"status": "expired"}, None)


def test_when_full_a_new_key_gets_429_and_known_keys_and_keyless_requests_are_served(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(max_idempotency_keys=2, idempotency_ttl=60)
    assert post(client, "/counter", EVENT, "k1").status_code == 200
    assert post(client, "/counters", [EVENT], "k2").status_code == 200
    for path, body in [("/counter", EVENT), ("/counters", [EVENT])]:
        refused = post(client, path, body, "k3")
        assert refused.status_code == 429
        message = refused.json()["error"]
        assert "already keeps 2 Idempotency-Keys (--max-idempotency-keys)" in message
        assert "nothing of it was applied" in message
    assert post(client, "/counter", EVENT, "k1").headers["idempotent-replayed"] == "true"
    assert post(client, "/counter", EVENT, "k2").status_code == 422  # known: not "full"
    assert post(client, "/counter", EVENT).status_code == 200
    assert minute(client) == {"a.com": 6, "b.com": 3}
    assert metric(client, CONFLICTS + '{reason="full"}') == 2
    assert metric(client, "tophosts_idempotency_keys") == 2
    clock.set(T0 - T0 % 60 + 120)  # k1 and k2 expired: room again
    assert post(client, "/counter", EVENT, "k3").status_code == 200
    assert metric(client, "tophosts_idempotency_keys") == 1


# -- in flight --------------------------------------------------------------------


class Call:
    """One POST straight into the ASGI app; with ``slow``, its body's second half waits
    until :meth:`finish` (the first half comes at once)."""

    def __init__(self, app: TopHosts, path: str, body: bytes, key: str, slow: bool = False):
        self.app, self.path, self.body, self.key = app, path, body, key
        self.chunks = [body[: len(body) // 2], body[len(body) // 2 :]] if slow else [body]
        self.slow = slow
        self.waiting = asyncio.Event()  # the app waits for the rest of the body
        self._rest = asyncio.Event()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.answer = b""

    def finish(self) -> None:
        self._rest.set()

    async def run(self) -> Call:
        headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"idempotency-key", self.key.encode()),
        ]
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": self.path}
        scope |= {"headers": headers, "query_string": b"", "http_version": "1.1"}

        async def receive() -> dict[str, Any]:
            if self.slow and len(self.chunks) == 1:
                self.waiting.set()
                await self._rest.wait()
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            else:
                self.answer += message.get("body", b"")

        await self.app(scope, receive, send)
        return self


def apps(store_url: str, clock: FakeClock, **settings: Any) -> tuple[TopHosts, TopHosts]:
    """Two apps on one store: two instances sharing Redis, or the memory store's one app
    twice (an instance's requests share its store)."""
    first = create_app(Settings(store=store_url, **settings), clock=clock)
    if store_url == "memory":
        return first, first
    return first, create_app(Settings(store=store_url, **settings), clock=clock)


async def close(*pair: TopHosts) -> None:
    for app in {id(a): a for a in pair}.values():
        await app.store.close()


@pytest.mark.anyio
async def test_a_key_is_in_flight_while_its_body_arrives_and_across_instances(
    store_url: str, clock: FakeClock
) -> None:
    here, there = apps(store_url, clock)
    body = msgspec.json.encode(EVENT)
    try:
        first = Call(here, "/counter", body, "slow", slow=True)
        running = asyncio.create_task(first.run())
        async with asyncio.timeout(5):
            await first.waiting.wait()
        for app in (here, there):
            for other in (body, msgspec.json.encode({**EVENT, "a.com": 9})):
                refused = await Call(app, "/counter", other, "slow").run()
                assert refused.status == 409
                assert refused.headers["retry-after"] == "1"
                error = msgspec.json.decode(refused.answer)["error"]
                assert 'Idempotency-Key "slow" is still being handled' in error
        first.finish()
        await running
        assert (first.status, first.answer) == (200, b'{"status":"ok"}')
        again = await Call(there, "/counter", body, "slow").run()
        assert (again.status, again.answer) == (200, b'{"status":"ok"}')
        assert again.headers["idempotent-replayed"] == "true"
        assert await here.store.top(Window.MINUTE, 10) == [("a.com", 2), ("b.com", 1)]
        refusals = CONFLICTS + '{reason="in_flight"} '
        assert (
            sum(
                float(line.split()[1])
                for app in {id(a): a for a in (here, there)}.values()
                for line in app.metrics.exposition(None)[0].decode().splitlines()
                if line.startswith(refusals)
            )
            == 4
        )
    finally:
        await close(here, there)


@pytest.mark.anyio
async def test_a_request_that_fails_while_in_flight_frees_its_key(
    store_url: str, clock: FakeClock
) -> None:
    here, there = apps(store_url, clock)
    try:
        bad = Call(here, "/counter", b'{"timestamp": 1, "a.com": true}', "k", slow=True)
        running = asyncio.create_task(bad.run())
        async with asyncio.timeout(5):
            await bad.waiting.wait()
        bad.finish()
        await running
        assert bad.status == 400
        # The other instance sees the key free once the mark is gone (in the background).
        deadline = time.monotonic() + 5
        while True:
            good = await Call(there, "/counter", msgspec.json.encode(EVENT), "k").run()
            if good.status != 409 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert (good.status, good.answer) == (200, b'{"status":"ok"}')
    finally:
        await close(here, there)


@pytest.mark.anyio
async def test_concurrent_requests_with_one_key_apply_once(
    store_url: str, clock: FakeClock
) -> None:
    here, there = apps(store_url, clock)
    body = msgspec.json.encode(EVENT)
    try:
        calls = [Call((here, there)[i % 2], "/counter", body, "race") for i in range(8)]
        done = await asyncio.gather(*(call.run() for call in calls))
        fresh = [c for c in done if c.status == 200 and "idempotent-replayed" not in c.headers]
        assert len(fresh) == 1
        for call in done:
            assert call.status in (200, 409)
            if call.status == 200:
                assert call.answer == b'{"status":"ok"}'
        assert await here.store.top(Window.MINUTE, 10) == [("a.com", 2), ("b.com", 1)]
    finally:
        await close(here, there)


# -- real processes ---------------------------------------------------------------


def past_hour_event(**hosts: int) -> dict[str, int]:
    return {"timestamp": int(time.time()) - 3600, **hosts}


@pytest.mark.e2e
def test_keys_survive_sigterm_and_a_restart_with_a_snapshot(tmp_path: Any) -> None:
    path = str(tmp_path / "snap")
    event = past_hour_event(**{"a.com": 5})
    batch = [event, past_hour_event(**{"b.com": 1})]
    first = Server("--snapshot", path, "--snapshot-interval", "3600")
    try:
        assert httpx.post(first.url + "/counter", json=event, headers={"idempotency-key": "one"})
        got = httpx.post(first.url + "/counters", json=batch, headers={"idempotency-key": "two"})
        assert got.json() == {"status": "ok", "accepted": 2, "expired": 0}
    finally:
        code, out = first.stop()  # SIGTERM
    assert code == 0, out
    second = Server("--snapshot", path)
    try:
        for route, body, key in [("/counter", event, "one"), ("/counters", batch, "two")]:
            again = httpx.post(second.url + route, json=body, headers={"idempotency-key": key})
            assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == {"status": "ok", "accepted": 2, "expired": 0}
        other = httpx.post(
            second.url + "/counter", json=batch[1], headers={"idempotency-key": "one"}
        )
        assert other.status_code == 422
        query = {"stats_type": "hour"}
        assert httpx.get(second.url + "/stats", params=query).json() == {
            "top_hosts": {"a.com": 10, "b.com": 1}
        }
        assert "tophosts_idempotency_keys 2.0" in httpx.get(second.url + "/metrics").text
    finally:
        second.stop()


def send_twice(urls: list[str], threads: int = 8, each: int = 200) -> list[str]:
    """``threads`` threads post ``each`` keyed requests, every one twice (the second
    time to the next URL); the errors, if any."""
    errors: list[str] = []
    ts = int(time.time()) - 3600

    def run(n: int) -> None:
        clients = [httpx.Client(base_url=url) for url in urls]
        try:
            for i in range(each):
                body = {"timestamp": ts, f"t{n}": 1, "all": 1 + i % 3}
                for attempt in range(2):
                    client = clients[(i + attempt) % len(clients)]
                    key = {"idempotency-key": f"t{n}-{i}"}
                    for _ in range(50):  # 409 while the first try is in flight
                        response = client.post("/counter", json=body, headers=key)
                        if response.status_code != 409:
                            break
                        time.sleep(0.01)
                    replayed = response.headers.get("idempotent-replayed") == "true"
                    if response.status_code != 200 or replayed != (attempt == 1):
                        errors.append(f"{n}-{i}-{attempt}: {response.status_code} {replayed}")
        finally:
            for client in clients:
                client.close()

    in_threads(run, threads)
    return errors


def expected_totals(threads: int = 8, each: int = 200) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for n in range(threads):
        totals[f"t{n}"] = each
        totals["all"] += sum(1 + i % 3 for i in range(each))
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


@pytest.mark.e2e
def test_eight_threads_sending_every_keyed_request_twice_count_each_once(
    store_url: str, servers: list[Server]
) -> None:
    if store_url == "memory":
        servers.append(Server())
    else:  # two instances: every retry goes to the other one
        servers += [Server("--store", store_url, "--redis-prefix", "twice") for _ in range(2)]
    assert send_twice([s.url for s in servers]) == []
    query = {"stats_type": "hour", "limit": "100"}
    for server in servers:
        hour_top = httpx.get(server.url + "/stats", params=query).json()["top_hosts"]
        assert hour_top == expected_totals()
    metrics = httpx.get(servers[0].url + "/metrics").text
    assert "tophosts_idempotency_keys 1600.0" in metrics


def slow_request(url: str, key: str, body: bytes) -> socket.socket:
    """Send a request's headers and half its body, and leave the rest for later."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    head = (
        f"POST /counter HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"idempotency-key: {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def until(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return got


def in_flight(url: str, key: str, redis_url: str | None) -> bool:
    """Whether ``key`` is in flight where every instance sees it: the mark in Redis
    (see the README's key layout), or for the memory store, the server itself
    (probed with a body that cannot apply: 409 if in flight, else 400)."""
    if redis_url is None:
        probe = httpx.post(url + "/counter", content=b"{", headers={"idempotency-key": key})
        return probe.status_code == 409
    with redis.Redis.from_url(redis_url) as client:
        value = client.get(f"tophosts:key:{idempotency.digest(key.encode()).hex()}")
    return value is not None and value.startswith(b"f:")


@pytest.mark.e2e
def test_over_http_a_slow_first_request_holds_its_key_and_then_is_replayed(
    store_url: str, servers: list[Server]
) -> None:
    shared = None if store_url == "memory" else store_url
    options = () if shared is None else ("--store", store_url)
    servers += [Server(*options) for _ in range(1 if shared is None else 2)]
    body = msgspec.json.encode(past_hour_event(**{"slow.com": 1}))
    sock = slow_request(servers[0].url, "slow-key", body)
    try:
        until(lambda: in_flight(servers[0].url, "slow-key", shared))
        headers = {"idempotency-key": "slow-key"}
        for server in servers:  # every instance
            refused = httpx.post(server.url + "/counter", content=body, headers=headers)
            assert refused.status_code == 409
            assert refused.headers["retry-after"] == "1"
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while not answer.endswith(b"}") and (chunk := sock.recv(65536)):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b'{"status":"ok"}')
    finally:
        sock.close()
    replay = httpx.post(servers[-1].url + "/counter", content=body, headers=headers)
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (200, "true")
    query = {"stats_type": "hour"}
    assert httpx.get(servers[-1].url + "/stats", params=query).json() == {
        "top_hosts": {"slow.com": 1}
    }


@pytest.mark.e2e
def test_the_in_flight_mark_of_an_instance_that_dies_goes_by_itself(
    redis_url: str, servers: list[Server]
) -> None:
    # The mark lasts --body-timeout plus --redis-timeout: 1.5 s here.
    options = ("--store", redis_url, "--body-timeout", "1", "--redis-timeout", "0.5")
    servers += [Server(*options) for _ in range(2)]
    body = msgspec.json.encode(past_hour_event(**{"orphan.com": 1}))
    headers = {"idempotency-key": "orphan"}
    other = servers[1].url + "/counter"
    sock = slow_request(servers[0].url, "orphan", body)
    try:
        until(lambda: in_flight(servers[0].url, "orphan", redis_url))
        servers[0].proc.kill()  # it cannot release the mark: the mark must expire
        died = time.monotonic()
        assert httpx.post(other, content=body, headers=headers).status_code == 409
        applied = until(
            lambda: (r := httpx.post(other, content=body, headers=headers)).status_code == 200 and r
        )
        assert time.monotonic() - died < 3
        assert "idempotent-replayed" not in applied.headers
    finally:
        sock.close()
    query = {"stats_type": "hour"}
    assert httpx.get(servers[1].url + "/stats", params=query).json() == {
        "top_hosts": {"orphan.com": 1}
    }
