"""Snapshots of the memory store, so a restart does not wipe the past hour.

The file is msgpack (msgspec) with a version field. Writes are atomic: a
temporary file in the same directory is written, fsynced and renamed over the
old snapshot, so a crash mid-write leaves the previous snapshot intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from tophosts.events import Count
from tophosts.store import FrozenDump, Snapshots, WindowDump

VERSION = 1
log = logging.getLogger("tophosts.snapshot")


class SnapshotError(RuntimeError):
    """A snapshot that cannot be read; the message says which file and why."""


class Snapshot(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    taken_at: float
    windows: list[tuple[int, int, dict[str, Count]]]
    # History: frozen windows, (size, start, hosts, counts). Absent from older files.
    history: list[tuple[int, int, list[str], list[Count]]] = []


class _Header(msgspec.Struct):
    version: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def write(
    path: Path, windows: list[WindowDump], taken_at: float, history: list[FrozenDump] | None = None
) -> None:
    """Write a snapshot atomically: temp file, fsync, rename, fsync the directory."""
    data = _encoder.encode(Snapshot(VERSION, taken_at, windows, history or []))
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    frozen = store.restore_history(snapshot.history)
    log.info(
        "restored %d of %d windows and %d of %d frozen ones from %s (taken %.0f s ago)",
        kept,
        len(snapshot.windows),
        frozen,
        len(snapshot.history),
        path,
        time.time() - snapshot.taken_at,
    )
    return kept + frozen


async def save(store: Snapshots, path: Path) -> None:
    """Snapshot ``store`` to ``path``; the encoding and disk work run off the event loop."""
    windows, history = store.dump(), store.dump_history()
    await asyncio.to_thread(write, path, windows, time.time(), history)


@contextlib.asynccontextmanager
async def periodic(store: Snapshots, path: Path, interval: float) -> AsyncIterator[None]:
    """Snapshot every ``interval`` seconds while the body runs, and once more at the end."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await save(store, path)
            except OSError as exc:
                log.error("snapshot to %s failed: %s", path, exc)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await save(store, path)
        log.info("snapshot written to %s", path)
