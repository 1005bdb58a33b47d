"""Processes and doubles shared by the tests, the bench and the drills.

Every server a test needs is started here, on a free port of 127.0.0.1,
unprivileged, with its files in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on a free port, its files in a temporary folder.

    Without persistence by default; ``appendonly=True`` logs every write to an
    AOF fsynced before the reply (``appendfsync always``), so that a restart
    after ``kill()`` brings back everything Redis acknowledged, or was about to.
    It can be killed, paused (SIGSTOP, to play a hung server), started again
    on the same port, and restarted into a long load (``restart_loading``).
    """

    def __init__(self, binary: str | None = None, *, appendonly: bool = False) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = found
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendonly = appendonly
        self._dir = tempfile.TemporaryDirectory(prefix="tophosts-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, *args: str, timeout: float = 10.0, loading: bool = False) -> None:
        """Start on the same port and folder; return once it answers PING (with
        ``loading``: once it answers at all, LOADING included)."""
        persistence = ("--appendonly", "yes", "--appendfsync", "always")
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", self._dir.name, "--save", ""),
                *(persistence if self.appendonly else ("--appendonly", "no")),
                *args,
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
            except redis.BusyLoadingError:
                if loading:
                    return
                time.sleep(0.02)
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def restart_loading(self, seconds: float) -> None:
        """Save what Redis holds plus filler, and restart it into loading all that for
        about ``seconds`` (Redis's ``key-load-delay``), during which it answers
        commands with ``-LOADING``. Returns once it does."""
        keys = 200
        with self.client() as client:
            # 1 KiB a key, uncompressed: Redis answers clients between keys (it does
            # every 1 KiB it reads).
            client.config_set("rdbcompression", "no")
            client.eval(
                "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'filler:' .. i, ARGV[2]) end",
                0,
                keys,
                "x" * 1024,
            )
            client.save()
        self.kill()
        delay = int(seconds / keys * 1e6)
        self.start(
            *("--appendonly", "no", "--dbfilename", "dump.rdb"),
            *("--key-load-delay", str(delay), "--loading-process-events-interval-bytes", "1024"),
            loading=True,
        )

    def loading(self) -> bool:
        with self.client() as client:
            return bool(client.info("persistence")["loading"])

    def client(self) -> redis.Redis:
        # No retries: redis-py's would wait out a LOADING Redis instead of saying so.
        return redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

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
        self._dir.cleanup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Fault:
    """One planned fault of a :class:`ReplyProxy` (see :meth:`ReplyProxy.fault`).

    Events, to wait on instead of sleeping:
    ``struck``: the fault happened (a request held, cut or answered in Redis's
    place; a reply from Redis held, or cut off). For a reply fault, this means
    Redis has run the request.
    ``answered``: Redis answered the faulted request (for a reply fault, the same
    as ``struck``; for a held request, once it was let through and run).
    """

    def __init__(
        self,
        markers: tuple[bytes, ...],
        on: str,
        action: str,
        seconds: float,
        nth: int,
        reply: bytes,
    ) -> None:
        assert on in ("request", "reply"), on
        assert action in ("delay", "drop", "cut", "answer"), action
        assert action != "answer" or on == "request", "only a request can be answered"
        self.markers = markers
        self.on = on
        self.action = action
        self.seconds = seconds
        self.nth = nth
        self.reply = reply
        self.struck = asyncio.Event()
        self.answered = asyncio.Event()
        self._released = asyncio.Event()

    def matches(self, data: bytes) -> bool:
        return all(marker in data for marker in self.markers)

    def release(self) -> None:
        """Let a dropped request or reply through after all (late), or a delayed one now."""
        self._released.set()

    async def hold(self) -> None:
        """Wait as the action says: ``seconds`` or until released, or, for a drop, until
        released."""
        if self.action == "drop":
            await self._released.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.seconds)


class ReplyProxy:
    """A TCP proxy in front of Redis that plays the network failing on chosen messages.

    ``fault(marker, ...)`` plans what happens to the ``nth`` request from now on
    whose bytes contain every marker (a host name, a script's SHA, ...; a
    request counts for the first planned fault it matches), or to Redis's
    reply to it: it is delayed by ``seconds``, dropped (held until
    released, the connection left open), cut (the connection closed: before the
    request reaches Redis, or once Redis has answered it), or, for a request,
    answered in Redis's place with ``reply`` (``-LOADING ...``, say) without
    Redis seeing it. Faults apply in the order planned; everything else passes
    untouched. When either side closes, so does the other. It runs in the
    test's own loop. ``seen(marker, ...)`` counts the requests so far that
    carried every marker, to tell which way a client went.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.url = ""
        self._server: asyncio.Server | None = None
        self._faults: list[Fault] = []  # planned, not struck yet
        self._planned: list[Fault] = []  # all ever planned
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._requests: list[bytes] = []  # every request, as it arrived
        self.struck = 0  # faults that struck so far

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        """Close every connection, and let each end on its own (a cancelled one is
        logged as an error by asyncio); what is held is let go at once."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for planned in self._planned:
            planned.release()
        for writer in self._open:
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def fault(
        self,
        *markers: bytes,
        on: str = "reply",
        action: str = "delay",
        seconds: float = 0.0,
        nth: int = 1,
        reply: bytes = b"",
    ) -> Fault:
        """Plan a fault (see the class); ``on`` is ``"request"`` or ``"reply"``, ``action``
        one of ``"delay"``, ``"drop"``, ``"cut"`` and ``"answer"``."""
        planned = Fault(markers, on, action, seconds, nth, reply)
        self._faults.append(planned)
        self._planned.append(planned)
        return planned

    def seen(self, *markers: bytes) -> int:
        """How many requests so far carried every one of ``markers``: those a fault
        held, cut or answered in Redis's place included."""
        return sum(all(marker in data for marker in markers) for data in self._requests)

    def _match(self, data: bytes) -> Fault | None:
        """The planned fault that strikes the request ``data`` (taken off the plan), if
        any: a request counts for the first planned fault it matches."""
        for planned in self._faults:
            if planned.matches(data):
                planned.nth -= 1
                if planned.nth > 0:
                    return None
                self._faults.remove(planned)
                return planned
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # Redis is down: as if it refused the connection
            writer.close()
            self._tasks.discard(task)
            return
        self._open.update((writer, up_writer))
        # Faults on the replies to come, and requests let through late that await
        # their answer. A client sends one request at a time on a connection (the
        # store's calls do), so what Redis sends next answers the last request.
        replies = asyncio.Queue[Fault]()

        async def upstream() -> None:
            # The client closing is passed on as such (a half close): Redis still
            # answers what reached it before, and then closes its end.
            cut = True
            try:
                while data := await reader.read(65536):
                    self._requests.append(data)
                    hit = self._match(data) if self._faults else None
                    if hit is not None and hit.on == "request":
                        hit.struck.set()
                        self.struck += 1
                        if hit.action == "cut":
                            return
                        if hit.action == "answer":
                            writer.write(hit.reply)
                            await writer.drain()
                            continue
                        await hit.hold()
                        if self._stopping:
                            return
                    if hit is not None:
                        # A reply fault, or a late request whose answer sets ``answered``.
                        replies.put_nowait(hit)
                    up_writer.write(data)
                    await up_writer.drain()
                cut = False
            finally:
                if cut or up_writer.is_closing():
                    up_writer.close()
                else:
                    up_writer.write_eof()

        async def downstream() -> None:
            try:
                while data := await up_reader.read(65536):
                    hit = None if replies.empty() else replies.get_nowait()
                    if hit is not None and hit.on == "request":
                        hit.answered.set()
                    elif hit is not None:
                        hit.struck.set()
                        hit.answered.set()
                        self.struck += 1
                        if hit.action == "cut":
                            return
                        await hit.hold()
                        if self._stopping:
                            return
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())
        self._open.difference_update((writer, up_writer))
        self._tasks.discard(task)


class HttpReplyProxy(ReplyProxy):
    """:class:`ReplyProxy` in front of an HTTP server (a tophosts ``Server``), in a thread
    of its own, for tests whose client is another process (``tophosts tail``).

    ``fault(b"POST /counters", action="cut")``: the next ``POST /counters`` reaches
    the server, which applies it and answers, and the answer is lost on the way
    back (the connection is closed). ``action="drop"`` holds the answer back
    instead, until :meth:`close`; :meth:`cut_connections` then loses it (and
    every other connection in flight), as a network failure would.
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

    def cut_connections(self) -> None:
        """Close every connection open now, both ways; new ones are served as before."""

        async def cut() -> None:
            for writer in list(self._open):
                writer.close()

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


SERVE = (sys.executable, "-m", "tophosts", "serve", "--host", "127.0.0.1")


class Server:
    """A real ``python -m tophosts serve`` process on a free port (or ``command``, any
    server that takes ``--port`` and answers ``GET /healthz``), stopped by :meth:`stop`.

    With ``--workers N`` among ``args`` it is ready only once fresh connections
    are answered whichever worker the kernel hands them to. ``wrapper`` runs the
    server under another program (valgrind, say: give it a longer
    ``ready_timeout``). Subclasses may act on the process as soon as it exists
    (:meth:`started`), before it is ready: the bench pins it to a CPU there.
    """

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        command: Sequence[str] = SERVE,
        wrapper: Sequence[str] = (),
        ready_timeout: float = 15.0,
        answer_within: float = 1.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.out = ""
        self.proc = subprocess.Popen(
            [*wrapper, *command, "--port", str(self.port), *args],
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.started()
        self.wait_ready(ready_timeout, answer_within)

    def started(self) -> None:
        """Called once the process exists, before it is ready."""

    def output(self) -> str:
        """What the server has written so far (stdout and stderr)."""
        if self.log.closed:
            return self.out
        # pread: the server writes through the same file offset, which must not move.
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def wait_ready(self, timeout: float = 15.0, answer_within: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        # One answer per fresh connection; with several workers, enough of them
        # in a row that each worker has (all but surely) answered one.
        wanted = 1 if self.workers == 1 else 12 * self.workers
        answered = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=answer_within).status_code == 200:
                    answered += 1
                    if answered >= wanted:
                        return
                    continue
            except httpx.TransportError:
                pass
            answered = 0
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout:g} s:\n{self.out}")

    def stop(self, timeout: float = 10.0) -> tuple[int, str]:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code
        and everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.out = self.output()
            self.log.close()
        return self.proc.returncode, self.out

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def with_history(
    snapshot: str, events: list[dict[str, Any]], *args: str, past: float = 3700
) -> Server:
    """A memory-store server on the real clock whose history already holds ``events``
    (stamped in the last ``past - 100`` seconds, or in the past minute or hour).

    They are posted to a first server whose clock runs ``past`` seconds behind and
    that takes them as future events (within its ``--max-skew``); it snapshots on
    SIGTERM, and the server returned restores that snapshot on the real clock, where
    the windows have closed and froze meanwhile: the minutes and hours are frozen as
    they would have been, had the events come in as they happened.
    """
    first = Server(
        "--snapshot", snapshot, "--snapshot-interval", "86400",
        "--clock-offset", f"-{past}", "--max-skew", str(int(past) + 300),
        "--log-level", "warning",
    )  # fmt: skip
    try:
        for i in range(0, len(events), 1000):
            response = httpx.post(first.url + "/counters", json=events[i : i + 1000], timeout=30)
            if response.status_code != 200 or response.json()["expired"]:
                raise RuntimeError(f"could not post the history: {response.text}")
    finally:
        first.proc.send_signal(signal.SIGTERM)
        code, out = first.stop(timeout=30)
    if code != 0:
        raise RuntimeError(f"the first server exited with {code}:\n{out}")
    return Server("--snapshot", snapshot, *args)


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
