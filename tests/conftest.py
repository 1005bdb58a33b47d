from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tophosts.app import create_app
from tophosts.config import Settings
from tophosts.store import Store, open_store

# 2023-11-14 22:13:20 UTC; a round hour plus 33 min 20 s.
T0 = 1_700_000_000


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = float(now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store under test; every API test runs once per store."""
    return str(request.param)


@pytest.fixture
def make_store(store_url: str, clock: FakeClock) -> Callable[..., Store]:
    def make(**options: Any) -> Store:
        return open_store(store_url, clock=clock, **options)

    return make


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(store_url: str, clock: FakeClock) -> Iterator[MakeClient]:
    """``make_client(top=5, ...)``: an in-process client for an app on a fake clock."""
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVE = (sys.executable, "-m", "tophosts", "serve", "--host", "127.0.0.1")


class Server:
    """A real ``python -m tophosts serve`` process on a free port."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*SERVE, "--port", str(self.port), *args],
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait_ready()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self, timeout: float = 10.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=timeout)
        if not self.log.closed:
            self.out = self.output()
            self.log.close()
        return self.proc.returncode, self.out


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
    srv.stop()
