from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.clock import FakeClock
from tests.support.servers import RedisServer, Server
from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.store import Store, open_store

# The Redis timeout of the stores and apps these fixtures make (the default is 1 s).
WIDE_TIMEOUT = 10.0

# Fixtures that start a process (redis-server, tophosts): their tests are ``slow``,
# left out of ``make check``'s inner loop and run by ``make test``.
PROCESS_FIXTURES = frozenset({"redis_server", "own_redis", "redis_url", "server", "servers"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())) or (
            params.get("store_url") == "redis"
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def redis_binary() -> str:
    """The redis-server binary; without one, skip, or fail under CI=true."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed, and CI=true needs the Redis tests to run")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the whole session; tests that stop it use ``own_redis`` instead."""
    server = RedisServer(redis_binary())
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, free to be killed or paused."""
    server = RedisServer(redis_binary())
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied for this test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store under test; every API and store test runs once per store."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.param)


@pytest.fixture
async def make_store(
    store_url: str, clock: FakeClock, anyio_backend: str
) -> AsyncIterator[Callable[..., Store]]:
    stores: list[Store] = []

    def make(**options: Any) -> Store:
        # A Redis that takes a while on a busy machine is not what these test:
        # the timeouts are tested where they are set on purpose.
        options.setdefault("redis_timeout", WIDE_TIMEOUT)
        store = open_store(store_url, clock=clock, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(store_url: str, clock: FakeClock) -> Iterator[MakeClient]:
    """``make_client(top=5, ...)``: an in-process client for an app on a fake clock."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        settings.setdefault("redis_timeout", WIDE_TIMEOUT)
        app = create_app(Settings(store=store_url, **settings), clock=clock)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
    srv.stop()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts itself; whichever still run at its end are killed."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
