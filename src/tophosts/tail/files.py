"""Which files to read, and from where: file identity, rotation, globs, files that appear later.

**Identity.** A file is its device and inode, plus the checksum of its first
line (its first 1 KiB if the line is longer), so that an inode reused by a new
file is not taken for the old one, plus a *generation* that goes up each time
its content is replaced in place (copytruncate), so that no two contents of one
inode ever derive the same batch keys.

**Polling.** Every poll (a fraction of a second) expands the followed paths and
globs, stats what they match and the rotated siblings of every file followed
(``access.log.1``, ``access.log-20250101``; compressed ones are skipped), and
compares:

- *Rename and create* (logrotate's default, then nginx reopening on USR1): the
  path now leads to a new inode. The old file is found again among the
  siblings by its inode and read on to its end (the server may write to it until
  it reopens its log); once it has been idle for ``--rotate-wait`` seconds, it is
  closed. The new file is read from its start.
- *Copytruncate*: the file is now shorter than what was read, or its first line
  changed. The lines between what was read and the truncation are in the copy,
  a sibling with the same first line: it is read from that offset to its end.
  Then the truncated file, in its next generation, is read from its start.
- *A file that appears later*, under a followed path or glob, is read from its
  start. A new file with the same first line as a followed one is a copy of it
  and is not read (it holds nothing new), unless that one is truncated.
- *Deleted*: a file still open is read to its end, then forgotten.

**At start-up** every file of the state file is looked for by its inode (at its
path, then among the siblings) and resumes at its acknowledged offset, whatever
the flags. A file the state does not know is read from its end (from its start
with ``--from-start``), except under a path or glob the state already followed:
that file appeared while the shipper was down, so it is read from its start.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from tophosts.tail.batch import Batch
from tophosts.tail.reader import last_line_end
from tophosts.tail.state import FileState, Pending, State

log = logging.getLogger("tophosts.tail")

FIRST_LINE_BYTES = 1024
COPY_PREFIX = 64 * 1024
COPY_STEP = 1 << 20
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".zip", ".br", ".Z")

Key = tuple[int, int]
"""``(device, inode)``."""


def first_line_checksum(fd: int) -> str | None:
    """The checksum of the file's first line (at most its first 1 KiB), ``None`` while the
    first line is shorter and has no newline yet."""
    head = os.pread(fd, FIRST_LINE_BYTES, 0)
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    elif len(head) < FIRST_LINE_BYTES:
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


@dataclasses.dataclass(eq=False)
class LogFile:
    """One file followed."""

    origin: str
    path: str
    dev: int
    ino: int
    first_line: str | None
    generation: int
    offset: int
    """Acknowledged: every line before it was counted by the server (or refused)."""
    position: int
    """Read up to here: the lines of ``[offset, position)`` are in ``batch``."""
    pending: Pending | None = None
    fd: int | None = None
    size: int = 0
    """The size seen last."""
    idle_since: float = 0.0
    batch: Batch | None = None
    waiting: int = -1
    """The size at which the last read found no complete line: not read again until it changes."""

    @property
    def key(self) -> Key:
        return (self.dev, self.ino)

    @property
    def lag(self) -> int:
        """Bytes behind: what is in the file and not acknowledged yet."""
        return max(0, self.size - self.offset)

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(self.fd)
            if (st.st_dev, st.st_ino) != self.key:
                os.close(self.fd)
                self.fd = None
                raise FileNotFoundError(f"{self.path} is another file now")
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def identity(self) -> str:
        """The first-line checksum, computed when first needed (a batch always has one)."""
        if self.first_line is None:
            self.first_line = first_line_checksum(self.open())
        assert self.first_line is not None, "a batch has a complete line, so a first line"
        return self.first_line

    def saved(self) -> FileState:
        return FileState(
            origin=self.origin,
            path=self.path,
            dev=self.dev,
            ino=self.ino,
            first_line=self.first_line,
            generation=self.generation,
            offset=self.offset,
            pending=self.pending,
        )


@dataclasses.dataclass
class _Copy:
    """A file taken for a copy of ``original`` (a followed file's key): byte for byte
    equal to it up to ``verified``."""

    path: str
    original: Key
    verified: int
    larger: int = 0
    """Polls in a row that found it larger than its original, which a copy never is."""


@dataclasses.dataclass(frozen=True)
class _Seen:
    path: str
    st: os.stat_result
    pattern: str | None
    """The followed path or glob that matched it; ``None`` for a rotated sibling."""


def _expand(pattern: str) -> list[str]:
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    return [path for path in paths if not path.endswith(COMPRESSED)]


def _stat(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class Watcher:
    """The set of files followed, kept up to date by :meth:`poll`."""

    def __init__(
        self,
        patterns: Iterable[str],
        clock: Callable[[], float],
        rotate_wait: float = 5.0,
    ) -> None:
        self.patterns = [os.path.abspath(p) for p in patterns]
        self.clock = clock
        self.rotate_wait = rotate_wait
        self.files: list[LogFile] = []
        self.copies: dict[Key, _Copy] = {}
        """Files that start as a followed one does, taken for its copies and not read (yet)."""
        self.changed = False
        """Whether the set of files or an identity changed since the state was saved."""

    # -- scanning ---------------------------------------------------------------

    def _scan(self) -> tuple[dict[Key, _Seen], dict[Key, _Seen]]:
        """What the followed paths and globs match, and the rotated siblings of every file."""
        matched: dict[Key, _Seen] = {}
        for pattern in self.patterns:
            for path in _expand(pattern):
                st = _stat(path)
                if st is not None:
                    matched.setdefault((st.st_dev, st.st_ino), _Seen(path, st, pattern))
        siblings: dict[Key, _Seen] = {}
        for directory, base in sorted({os.path.split(f.origin) for f in self.files}):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if name == base or not name.startswith(base) or name.endswith(COMPRESSED):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    siblings.setdefault((st.st_dev, st.st_ino), _Seen(entry.path, st, None))
        return matched, siblings

    def _checksum_of(self, seen: _Seen) -> str | None:
        """The first-line checksum of the file ``seen`` stat'ed, ``None`` if its path
        leads to another file by now (renamed meanwhile) or it has no complete line."""
        return self._look(seen)[1]

    @staticmethod
    def _look(seen: _Seen) -> tuple[bool, str | None]:
        """``(still there, first-line checksum)`` of the file ``seen`` stat'ed."""
        try:
            fd = os.open(seen.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False, None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (seen.st.st_dev, seen.st.st_ino):
                return False, None
            return True, first_line_checksum(fd)
        finally:
            os.close(fd)

    def _new(self, seen: _Seen, offset: int, origin: str | None = None, **extra: object) -> LogFile:
        st = seen.st
        f = LogFile(
            origin=origin or seen.path,
            path=seen.path,
            dev=st.st_dev,
            ino=st.st_ino,
            first_line=None,
            generation=0,
            offset=offset,
            position=offset,
            size=st.st_size,
            idle_since=self.clock(),
        )
        for name, value in extra.items():
            setattr(f, name, value)
        self.changed = True
        return f

    # -- start-up ---------------------------------------------------------------

    def start(self, state: State | None, from_start: bool) -> None:
        """Resume the files of ``state``, and add the others the patterns match."""
        known_patterns = set(state.patterns if state else ())
        saved = list(state.files) if state else []
        self.files = [_from_state(fs, self.clock()) for fs in saved]
        matched, siblings = self._scan()
        everywhere = {**siblings, **matched}
        resumed: list[LogFile] = []
        for f in self.files:
            resumed.extend(self._resume(f, everywhere))
        self.files = resumed
        followed = {f.key for f in self.files}
        for pattern in self.patterns:
            if not any(seen.pattern == pattern for seen in matched.values()):
                log.info(
                    "nothing matches %s yet; what appears there is read from its start", pattern
                )
        for key, seen in matched.items():
            if key in followed:
                continue
            checksum = self._checksum_of(seen)
            if checksum is None:
                continue  # no complete first line yet: looked at again by the next poll
            original = self._original_of(seen, checksum)
            if original is not None:
                self.copies[key] = _Copy(seen.path, original.key, 0)
                log.info("%s is a copy of a file already followed; not read", seen.path)
                continue
            if seen.pattern in known_patterns:
                start, why = 0, "it appeared while tophosts tail was stopped"
            elif from_start:
                start, why = 0, "--from-start"
            else:
                start, why = self._end_of(seen), "a file not in the state is read from its end"
            log.info("following %s from offset %d (%s)", seen.path, start, why)
            self.files.append(self._new(seen, start, first_line=checksum))
        self.changed = True

    def _end_of(self, seen: _Seen) -> int:
        fd = os.open(seen.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return last_line_end(fd, seen.st.st_size)
        finally:
            os.close(fd)

    def _resume(self, f: LogFile, everywhere: dict[Key, _Seen]) -> list[LogFile]:
        """The file(s) to follow for the state entry ``f``: itself where it is now, and/or
        the copy that holds its old content."""
        seen = everywhere.get(f.key)
        files: list[LogFile] = []
        if seen is not None:
            f.path, f.size = seen.path, seen.st.st_size
            there, checksum = self._look(seen)
            # Moved since the scan (a rotation right now): the next poll finds it again,
            # and tells a replaced content by its first line then.
            same = not there or f.first_line is None or checksum == f.first_line
            if same and seen.st.st_size >= max(f.offset, f.pending.end if f.pending else 0):
                log.info("resuming %s at offset %d", f.path, f.offset)
                return [f]
            # Its content was replaced while we were stopped (copytruncate, or the inode
            # went to a new file): the old content may live on in a copy.
            replaced = LogFile(
                origin=f.origin,
                path=seen.path,
                dev=f.dev,
                ino=f.ino,
                first_line=checksum,
                generation=f.generation + 1,
                offset=0,
                position=0,
                size=seen.st.st_size,
                idle_since=self.clock(),
            )
            log.info(
                "%s was replaced while stopped; reading its new content from the start", f.path
            )
            files.append(replaced)
        copy = self._find_copy(f, everywhere)
        if copy is not None:
            files.insert(0, copy)
        elif f.first_line is not None and (f.pending is not None or f.size > f.offset):
            self._lost(f)
        elif seen is None:
            log.info("%s (inode %d) is gone; forgetting it", f.path, f.ino)
        return files

    def _find_copy(self, f: LogFile, everywhere: dict[Key, _Seen]) -> LogFile | None:
        """A file with ``f``'s first line holding at least what ``f`` read, to read on from;
        never one followed already (an older copy, renamed on by the next rotation)."""
        if f.first_line is None:
            return None
        exclude = {g.key for g in self.files} | {f.key}
        need = max(f.position, f.pending.end if f.pending else 0)
        directory = os.path.dirname(f.origin)
        for key, seen in sorted(everywhere.items(), key=lambda kv: kv[1].path):
            if key in exclude or os.path.dirname(seen.path) != directory:
                continue
            if seen.st.st_size < need or self._checksum_of(seen) != f.first_line:
                continue
            log.info(
                "reading the rest of %s's old content from its copy %s, from offset %d",
                f.path,
                seen.path,
                f.position,
            )
            self.copies.pop(key, None)
            return self._new(
                seen,
                f.position,
                origin=f.origin,
                first_line=f.first_line,
                pending=f.pending,
            )
        return None

    def _lost(self, f: LogFile) -> None:
        if f.pending is not None:
            log.error(
                "%s (inode %d) is gone, and so is its pending batch %d-%d: it may or may not "
                "have been counted",
                f.path,
                f.ino,
                f.pending.start,
                f.pending.end,
            )
        else:
            log.warning(
                "%s (inode %d) is gone or was truncated before its end was read; lines "
                "after offset %d of it, if any, were not shipped",
                f.path,
                f.ino,
                f.offset,
            )

    # -- running ----------------------------------------------------------------

    def poll(self) -> list[LogFile]:
        """Bring the set of files up to date; return the files found truncated.

        The caller sends what was read of each (its batch), then calls
        :meth:`replaced` for it.
        """
        now = self.clock()
        matched, siblings = self._scan()
        truncated: list[LogFile] = []
        kept: list[LogFile] = []
        for f in self.files:
            seen = matched.get(f.key) or siblings.get(f.key)
            if seen is None:
                if f.fd is None:
                    if f.batch is None and f.pending is None:
                        log.info("%s (inode %d) is gone; forgetting it", f.path, f.ino)
                        self.changed = True
                        continue
                    kept.append(f)
                    continue
                size = os.fstat(f.fd).st_size  # deleted, but still open: read it to its end
            else:
                if seen.path != f.path:
                    log.info("%s is now %s", f.path, seen.path)
                    f.path = seen.path
                    self.changed = True
                size = seen.st.st_size
            if size != f.size:
                f.idle_since = now
                if size < f.position or self._rewritten(f):
                    truncated.append(f)
                f.size = size
            elif (
                f.fd is not None
                and f.batch is None
                and f.position >= size
                and now - f.idle_since >= self.rotate_wait
            ):
                f.close()  # idle and read: reopened when it grows
            kept.append(f)
        self.files = kept
        followed = {f.key for f in self.files}
        for key, copy in list(self.copies.items()):
            seen = matched.get(key) or siblings.get(key)
            if seen is None:
                del self.copies[key]
            elif not self._still_a_copy(seen, copy, truncated):
                # A copy stays byte for byte the start of its original; a new log that
                # merely began with the same lines (two rotations in one second, say)
                # differs further on, and is then read from its start.
                log.info("%s is no copy after all (it differs further on); reading it", seen.path)
                del self.copies[key]
                self.files.append(self._new(seen, 0))
                followed.add(key)
        for key, seen in matched.items():
            if key in followed or key in self.copies:
                continue
            # A new file is followed once its first line is complete, so that a copy
            # being written (copytruncate's, matched by a glob) is known for one
            # before any of it is read.
            checksum = self._checksum_of(seen)
            if checksum is None:
                continue
            original = self._original_of(seen, checksum)
            if original is not None:
                self.copies[key] = _Copy(seen.path, original.key, 0)
                log.info("%s is a copy of a file already followed; not read", seen.path)
                continue
            log.info("following %s from its start (a new file)", seen.path)
            # Rotated files first: the rest of an old file is read before the new one.
            self.files.append(self._new(seen, 0, first_line=checksum))
        return truncated

    def _original_of(self, seen: _Seen, checksum: str) -> LogFile | None:
        """The followed file that ``seen`` starts as, if any: same first line, and the same
        first bytes, as many as both have (up to 64 KiB)."""
        for f in self.files:
            if (
                f.first_line == checksum
                and f.key != (seen.st.st_dev, seen.st.st_ino)
                and self._same(seen.path, f, 0, min(COPY_PREFIX, seen.st.st_size, f.size))
            ):
                return f
        return None

    def _still_a_copy(self, seen: _Seen, copy: _Copy, truncated: list[LogFile]) -> bool:
        """Whether ``seen`` is still what a copy of its original would be.

        A copy is byte for byte the start of its original, and never longer than it
        (the original only grows until copytruncate truncates it, and then the copy
        is claimed). So what the two have gained since the last poll is compared (at
        most ``COPY_STEP`` bytes a poll: a real copy is read through once), and a file
        found longer than its original two polls in a row (one could be a race with
        the copy's own writing) is no copy.
        """
        original = next((f for f in self.files if f.key == copy.original), None)
        if original is None:
            return True  # its original is forgotten (gone): it was read, so is this
        if original in truncated:
            return True  # claimed as the copy of what was truncated, next
        copy.larger = copy.larger + 1 if seen.st.st_size > original.size else 0
        if copy.larger >= 2:
            return False
        end = min(seen.st.st_size, original.size, copy.verified + COPY_STEP)
        if end <= copy.verified:
            return True
        if not self._same(seen.path, original, copy.verified, end - copy.verified):
            return False
        copy.verified = end
        return True

    @staticmethod
    def _same(path: str, f: LogFile, offset: int, n: int) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return os.pread(fd, n, offset) == os.pread(f.open(), n, offset)
        except OSError:
            return False
        finally:
            os.close(fd)

    def _rewritten(self, f: LogFile) -> bool:
        """Whether the first line of ``f`` changed: its content was replaced in place."""
        if f.first_line is None:
            return False
        try:
            fd = f.open()
        except OSError:
            return False
        return first_line_checksum(fd) != f.first_line

    def replaced(self, f: LogFile) -> None:
        """``f`` was truncated (its batch is sent): read the rest of its old content from its
        copy, if one is beside it, then its new content from the start."""
        assert f.batch is None
        assert f.pending is None
        matched, siblings = self._scan()
        copy = self._find_copy(f, {**siblings, **matched})
        if copy is not None:
            self.files.insert(self.files.index(f), copy)
        elif f.first_line is not None:
            log.warning(
                "%s was truncated, and no copy of its old content (a file beside it with the "
                "same first line) was found: lines written after offset %d before the "
                "truncation, if any, are not shipped",
                f.path,
                f.position,
            )
        log.info("%s was truncated; reading it again from its start", f.path)
        f.generation += 1
        f.first_line = None
        f.offset = f.position = 0
        self.changed = True

    def readable(self) -> list[LogFile]:
        """Files with complete lines not read yet. Of the files found at one path (a log
        and its rotated predecessors), only the oldest of them: the rest of an old file
        is read before the next one. A partial last line does not hold the next back."""
        ready: list[LogFile] = []
        busy: set[str] = set()
        for f in self.files:
            if f.size > f.position and f.size != f.waiting and f.origin not in busy:
                ready.append(f)
                busy.add(f.origin)
        return ready

    def state(self) -> State:
        return State(patterns=list(self.patterns), files=[f.saved() for f in self.files])

    def close(self) -> None:
        for f in self.files:
            f.close()


def _from_state(fs: FileState, now: float) -> LogFile:
    return LogFile(
        origin=fs.origin,
        path=fs.path,
        dev=fs.dev,
        ino=fs.ino,
        first_line=fs.first_line,
        generation=fs.generation,
        offset=fs.offset,
        position=fs.offset,
        pending=fs.pending,
        idle_since=now,
    )


__all__ = ["LogFile", "Path", "Watcher", "first_line_checksum"]
