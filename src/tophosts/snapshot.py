"""Snapshots of the memory store, so a restart does not wipe the past hour.

The file is msgpack (msgspec) with a version field. Writes are atomic: a
temporary file in the same directory is written, fsynced and renamed over the
old snapshot, and the directory is fsynced, so a crash mid-write leaves the
previous snapshot intact.

The periodic snapshots are written by a forked child, as Redis's ``BGSAVE``
does: ``fork()`` hands the child a copy-on-write image of the store as it is
between two requests (so a batch is in the snapshot whole or not at all), and
the child encodes and writes it while the event loop goes on serving. Encoding
in a thread would not help: msgspec holds the GIL. The server pays for the
``fork()`` alone (a few ms for a million (host, window) pairs), and memory for
the pages that either process changes while the child runs (the child's own
reference counting changes most of them: about the store's size again, for the
second or so it takes). The child runs at a lower priority (``nice``
:data:`CHILD_NICE`), so that on a busy core it yields to the server. The
snapshot at shutdown is written in-process.

A forked child of a process with an event loop and threads may only do what
needs no lock another thread could have held and no loop: it resets its signal
handlers, closes every inherited file descriptor (so no client connection
outlives the server's close of it), disables the garbage collector, and then
only dumps, encodes, writes and ``os._exit``s. It reports how it went on a
pipe; the server waits for it on a pidfd without blocking, logs a failure, and
never runs two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import msgspec

from tophosts import background, durable
from tophosts.events import Count
from tophosts.store import FrozenDump, KeyDump, Snapshots, WindowDump

VERSION = 1
CHILD_NICE = 10
"""How much lower the snapshot writer's CPU priority is than the server's."""
log = logging.getLogger("tophosts.snapshot")


class SnapshotError(RuntimeError):
    """A snapshot that cannot be read; the message says which file and why."""


class SnapshotFailed(RuntimeError):
    """A snapshot that could not be written; the previous one is still in place."""


class Snapshot(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    taken_at: float
    windows: list[tuple[int, int, dict[str, Count]]]
    # Idempotency keys (tophosts.store.KeyDump); absent from files of earlier versions.
    keys: list[tuple[int, bytes, list[int]]] = msgspec.field(default_factory=list)
    # History: frozen windows, (size, start, hosts, counts). Absent from older files.
    history: list[tuple[int, int, list[str], list[Count]]] = msgspec.field(default_factory=list)


class _Header(msgspec.Struct):
    version: int


class _Report(msgspec.Struct):
    """What the child writes on its pipe: ``error`` empty when the snapshot is in place."""

    error: str = ""
    seconds: float = 0.0
    size: int = 0
    copied_kib: int = -1


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode(
    windows: list[WindowDump],
    taken_at: float,
    keys: list[KeyDump] | None = None,
    history: list[FrozenDump] | None = None,
) -> bytes:
    return _encoder.encode(Snapshot(VERSION, taken_at, windows, keys or [], history or []))


def write(
    path: Path,
    windows: list[WindowDump],
    taken_at: float,
    keys: list[KeyDump] | None = None,
    history: list[FrozenDump] | None = None,
) -> None:
    """Write a snapshot atomically (see :func:`durable.write_atomically`)."""
    durable.write_atomically(path, encode(windows, taken_at, keys, history))


def read(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, ``None`` if there is none; :class:`SnapshotError` if unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from None
    try:
        version = msgspec.msgpack.decode(data, type=_Header).version
    except (msgspec.DecodeError, RecursionError):
        raise SnapshotError(f"snapshot {path} is corrupt: not a tophosts snapshot") from None
    if version != VERSION:
        raise SnapshotError(
            f"snapshot {path} has format version {version}; this tophosts reads version {VERSION}"
        )
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise SnapshotError(f"snapshot {path} is corrupt: {exc}") from None


def restore(store: Snapshots, path: Path, ignore_corrupt: bool = False) -> int:
    """Load ``path`` into ``store``; returns the windows kept, frozen ones included (expired
    ones are dropped)."""
    try:
        snapshot = read(path)
    except SnapshotError as exc:
        if not ignore_corrupt:
            raise
        log.warning("%s; starting empty (--snapshot-ignore-corrupt)", exc)
        return 0
    if snapshot is None:
        log.info("no snapshot at %s yet; starting empty", path)
        return 0
    kept = store.restore(snapshot.windows)
    keys = store.restore_keys(snapshot.keys)
    frozen = store.restore_history(snapshot.history)
    log.info(
        "restored %d of %d windows, %d of %d frozen ones and %d idempotency keys from %s"
        " (taken %.0f s ago)",
        kept,
        len(snapshot.windows),
        frozen,
        len(snapshot.history),
        keys,
        path,
        time.time() - snapshot.taken_at,
    )
    return kept + frozen


def save(store: Snapshots, path: Path) -> None:
    """Snapshot ``store`` to ``path`` in this process (at shutdown; it holds the loop)."""
    write(path, store.dump(), time.time(), store.dump_keys(), store.dump_history())


# -- the background writer ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Written:
    """One snapshot a child wrote."""

    pid: int
    fork_ms: float  # how long fork() held the server
    seconds: float  # the child's time, from fork to the rename's fsync
    size: int  # bytes written
    copied_mib: float | None  # the child's private memory at its end (copy-on-write)


@dataclasses.dataclass
class _Child:
    pid: int
    tmp: Path
    report: int  # the read end of the child's pipe
    pidfd: int | None
    fork_ms: float


class BackgroundWriter:
    """Writes snapshots of ``store`` to ``path`` from forked children, one at a time."""

    def __init__(self, store: Snapshots, path: Path) -> None:
        self.store = store
        self.path = path
        self.child: _Child | None = None

    async def write(self) -> Written:
        """Fork a child to write a snapshot and wait for it (without blocking the loop).

        Raises :class:`SnapshotFailed` when it could not be written, and
        ``RuntimeError`` when a child is already at work.
        """
        if self.child is not None:
            raise RuntimeError("a snapshot is being written already")
        child = self.child = self._fork()
        # Cancelled meanwhile (at shutdown), the child stays for stop() to kill.
        status = await self._exited(child)
        report = self._report(child)
        self._forget(child)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or report.error:
            with contextlib.suppress(FileNotFoundError):
                child.tmp.unlink()
            if report.error:
                raise SnapshotFailed(report.error)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            raise SnapshotFailed(f"the snapshot writer (pid {child.pid}) {how}")
        copied = report.copied_kib / 1024 if report.copied_kib >= 0 else None
        return Written(child.pid, child.fork_ms, report.seconds, report.size, copied)

    def stop(self) -> None:
        """Kill a child still at work and remove its temporary file (before a final save)."""
        child = self.child
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
        with contextlib.suppress(FileNotFoundError):
            child.tmp.unlink()
        self._forget(child)

    def _forget(self, child: _Child) -> None:
        os.close(child.report)
        if child.pidfd is not None:
            os.close(child.pidfd)
        self.child = None

    def _fork(self) -> _Child:
        taken_at = time.time()
        read_end, write_end = os.pipe()
        started = time.perf_counter()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # pragma: no cover - the child; measured by the tests from outside
            _child(self.store, self.path, taken_at, write_end)
        fork_ms = (time.perf_counter() - started) * 1000
        os.close(write_end)
        os.set_blocking(read_end, False)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(pid)
        return _Child(pid, _tmp_path(self.path, pid), read_end, pidfd, fork_ms)

    async def _exited(self, child: _Child) -> int:
        """The child's wait status, once it has exited; the loop serves meanwhile."""
        loop = asyncio.get_running_loop()
        if child.pidfd is not None:
            exited: asyncio.Future[None] = loop.create_future()

            def ready() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(child.pidfd, ready)
            try:
                await exited
            finally:
                loop.remove_reader(child.pidfd)
        while True:  # without a pidfd, poll; with one, the child is a zombie by now
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                return 0x7F00  # reaped by someone else: exit code 127, unknown
            if pid:
                return status
            await asyncio.sleep(0.02)

    @staticmethod
    def _report(child: _Child) -> _Report:
        try:
            data = os.read(child.report, 65536)
        except BlockingIOError:
            data = b""
        if not data:
            return _Report()
        try:
            return msgspec.json.decode(data, type=_Report)
        except msgspec.DecodeError:
            return _Report(error=f"the snapshot writer reported {data[:200]!r}")


def _tmp_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _child(store: Snapshots, path: Path, taken_at: float, report: int) -> NoReturn:
    """The forked child: write the snapshot, report on ``report``, ``os._exit``. Never returns."""
    started = time.perf_counter()
    code = 1
    try:
        # First, so that on a shared core the server gets it back at once.
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICE)
        gc.disable()
        # A signal must not run the server's handlers here, nor write to its
        # loop's wake-up fd (its number is about to be reused).
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, signal.SIG_DFL)
        os.closerange(3, report)
        os.closerange(report + 1, 2**31 - 1)
        tmp = _tmp_path(path, os.getpid())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            data = memoryview(
                encode(store.dump(), taken_at, store.dump_keys(), store.dump_history())
            )
            size = len(data)
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        durable.fsync_directory(path.parent)
        message = _Report(
            seconds=time.perf_counter() - started, size=size, copied_kib=_private_kib()
        )
        code = 0
    except BaseException as exc:  # everything is reported, nothing raised
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
        if isinstance(exc, OSError) and exc.filename:
            error = f"{error}: {exc.filename}"
        message = _Report(error=error)
        with contextlib.suppress(BaseException):
            os.unlink(_tmp_path(path, os.getpid()))
    try:
        os.write(report, msgspec.json.encode(message))
    finally:
        os._exit(code)


def _private_kib() -> int:
    """This process's private dirty memory in KiB: the pages it copied since the fork."""
    try:
        with open("/proc/self/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Private_Dirty:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


@contextlib.asynccontextmanager
async def periodic(store: Snapshots, path: Path, interval: float) -> AsyncIterator[None]:
    """Snapshot every ``interval`` seconds (from the end of the previous one) while the body
    runs, each from a forked child; once more, in-process, at the end."""
    writer = BackgroundWriter(store, path)

    async def one() -> None:
        try:
            done = await writer.write()
        except SnapshotFailed as exc:
            log.error("snapshot to %s failed: %s; the previous snapshot is kept", path, exc)
            return
        except OSError as exc:
            log.error(
                "cannot fork the snapshot writer (%s); the previous snapshot is kept, "
                "the next try is in %g s",
                exc.strerror or exc,
                interval,
            )
            return
        copied = f"{done.copied_mib:.1f} MiB" if done.copied_mib is not None else "unknown"
        log.info(
            "snapshot written to %s in %.2f s by pid %d (fork %.1f ms, %.1f MB, copy-on-write %s)",
            path,
            done.seconds,
            done.pid,
            done.fork_ms,
            done.size / 1e6,
            copied,
        )

    try:
        async with background.every(interval, one, final=False):
            yield
    finally:
        writer.stop()
        save(store, path)
        log.info("snapshot written to %s", path)
