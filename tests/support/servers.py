"""Processes and doubles shared by the tests, the bench and the drills.

Every server a test needs is started here, on a free port of 127.0.0.1,
unprivileged, with its files in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import httpx
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on a free port, without persistence.

    It can be killed, paused (SIGSTOP, to play a hung server) and started again
    on the same port, for the fault tests.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server and all it held are gone at once."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)


class ReplyProxy:
    """A TCP proxy in front of Redis that holds back, or cuts off, chosen replies.

    ``hold(marker, ...)``: the reply to the ``nth`` request (from now on) whose
    bytes contain ``marker`` (a host name, say) reaches the client ``seconds``
    late, or, with ``cut``, never: the connection is closed once Redis has
    answered (``cut_after`` seconds later). Everything else passes untouched.
    It runs in the test's own loop.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.url = ""
        self._server: asyncio.Server | None = None
        self._rule: tuple[bytes, float, bool, int, float] | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.held = 0  # replies held back or cut so far

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        """Close every connection, and let each end on its own (a cancelled one is
        logged as an error by asyncio)."""
        if self._server is not None:
            self._server.close()
        for writer in self._open:
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def hold(
        self,
        marker: bytes,
        seconds: float = 0.0,
        cut: bool = False,
        nth: int = 1,
        cut_after: float = 0.0,
    ) -> None:
        self._rule = (marker, seconds, cut, nth, cut_after)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the server is down: so is the connection, as without a proxy
            writer.close()
            self._tasks.discard(task)
            return
        self._open.update((writer, up_writer))
        marked = asyncio.Queue[tuple[float, bool, float]]()

        async def upstream() -> None:
            while data := await reader.read(65536):
                rule = self._rule
                if rule is not None and rule[0] in data:
                    marker, seconds, cut, nth, cut_after = rule
                    if nth == 1:
                        self._rule = None
                        marked.put_nowait((seconds, cut, cut_after))
                    else:
                        self._rule = (marker, seconds, cut, nth - 1, cut_after)
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if not marked.empty():
                    seconds, cut, cut_after = marked.get_nowait()
                    self.held += 1
                    if cut:
                        await asyncio.sleep(cut_after)
                        writer.close()
                        up_writer.close()
                        return
                    await asyncio.sleep(seconds)
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())
        writer.close()
        up_writer.close()
        self._open.difference_update((writer, up_writer))
        self._tasks.discard(task)


class HttpReplyProxy(ReplyProxy):
    """:class:`ReplyProxy` in front of an HTTP server (a tophosts ``Server``), in a thread
    of its own, for tests whose client is another process (``tophosts tail``).

    ``hold(b"POST /counters", cut=True)``: the next ``POST /counters`` reaches the
    server, which applies it and answers, and the answer is dropped on the way
    back (the connection is closed, ``cut_after`` seconds later).
    ``hold(..., seconds=s)`` delays the answer instead. ``held`` counts the
    answers so treated.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(10)
        assert self._server is not None
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def _shutdown(self) -> None:
        await self.stop()
        # An answer still held back (its client gone) is not waited for.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


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


TAIL = (sys.executable, "-m", "tophosts", "tail")


class Tail:
    """A real ``python -m tophosts tail`` process; its output goes to a temporary file."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read by output() after the process ends
        self.proc = subprocess.Popen(
            [*TAIL, *args],
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def kill(self) -> None:
        """kill -9: gone at once, with nothing flushed or written."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
