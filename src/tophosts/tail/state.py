"""The state file: what ``tophosts tail`` has shipped, so a restart neither loses nor repeats.

It holds, for each log file it follows, the file's identity (device, inode, the
checksum of its first line, and a generation bumped whenever its content is
replaced in place), the *acknowledged* offset (every line before it was counted
by the server, or refused and skipped), and any *pending* range: a batch that
was sent but not yet acknowledged, with the ``Idempotency-Key`` it was sent
with. It also remembers the paths and globs it was asked to follow, so that a
file appearing under one of them while the shipper was down is read from its
start.

The file is versioned JSON, small enough to read by eye. It is written
atomically (a temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash at any moment leaves either the old state or the new one,
never a mix. A file that cannot be read stops start-up with one line naming the
file and the reason: starting over silently would ship every file again, or
skip what was pending.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import msgspec

from tophosts import durable

FORMAT = "tophosts-tail-state"
VERSION = 1


class StateError(RuntimeError):
    """A state file that cannot be used; the message names the file and what to do."""


class Pending(msgspec.Struct, forbid_unknown_fields=True):
    """A batch sent but not acknowledged: ``[start, end)`` of its file, and its key."""

    start: int
    end: int
    key: str
    skip: list[tuple[int, str]] = []
    """``(second, host)`` pairs the server refused (400) and the batch left out."""


class FileState(msgspec.Struct, forbid_unknown_fields=True):
    origin: str
    """The followed path (or glob match) where the file was first found."""
    path: str
    """Where it was last seen (a rotated file moves)."""
    dev: int
    ino: int
    first_line: str | None
    """Checksum of the first line (its first 1 KiB), ``None`` until it is complete."""
    generation: int
    offset: int
    pending: Pending | None = None


class State(msgspec.Struct, forbid_unknown_fields=True):
    format: str = FORMAT
    version: int = VERSION
    patterns: list[str] = []
    files: list[FileState] = []


class _Header(msgspec.Struct):
    format: str = ""
    version: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(State)
_AWAY = (
    "move it away to start afresh (files are then read as new: from their end, or with "
    "--from-start from their start)"
)


def load(path: Path) -> State | None:
    """The state at ``path``; ``None`` if there is none yet; :class:`StateError` if unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror}") from None
    try:
        header = msgspec.json.decode(data, type=_Header)
    except (msgspec.DecodeError, RecursionError):
        raise StateError(
            f"the state file {path} is corrupt (not JSON, or truncated); restore it from a "
            f"backup, or {_AWAY}"
        ) from None
    if header.format != FORMAT:
        raise StateError(
            f"{path} is not a tophosts tail state file; give --state another path, or {_AWAY}"
        )
    if header.version != VERSION:
        raise StateError(
            f"the state file {path} has version {header.version}, and this tophosts reads "
            f"version {VERSION}; use the tophosts that wrote it, or {_AWAY}"
        )
    try:
        state = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise StateError(f"the state file {path} is corrupt ({exc}); {_AWAY}") from None
    for entry in state.files:
        problem = _check(entry)
        if problem:
            raise StateError(f"the state file {path} is corrupt ({problem}); {_AWAY}")
    return state


def _check(entry: FileState) -> str:
    if entry.offset < 0:
        return f"{entry.path}: negative offset {entry.offset}"
    pending = entry.pending
    if pending is not None and not (entry.offset == pending.start < pending.end):
        return (
            f"{entry.path}: pending range {pending.start}-{pending.end} does not start at "
            f"its offset {entry.offset}"
        )
    return ""


def save(path: Path, state: State) -> None:
    """Write ``state`` atomically (see :func:`durable.write_atomically`)."""
    durable.write_atomically(path, _encoder.encode(state) + b"\n")


class Lock:
    """An exclusive lock on ``<state>.lock``: two shippers on one state would ship twice."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Lock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(
                f"cannot create {self.path} next to the state file: {exc.strerror}; give "
                "--state a path in a directory this user can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"another tophosts tail holds {self.path}: one shipper per state file "
                "(give each its own --state)"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
