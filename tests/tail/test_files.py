"""File identity and rotation: which files are followed, and from which offset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tophosts.tail.files import LogFile, Watcher, first_line_checksum
from tophosts.tail.state import FileState, Pending, State


def write(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write(text)


def lines(n: int, tag: str = "a") -> str:
    return "".join(f"1700000000.{i:03d} {tag}{i}.com\n" for i in range(n))


def read_all(watcher: Watcher) -> None:
    """What the shipper does when it has read and shipped everything."""
    for f in watcher.files:
        f.position = f.offset = f.size


def followed(watcher: Watcher) -> list[tuple[str, int]]:
    return [(os.path.basename(f.path), f.position) for f in watcher.files]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


def test_a_first_run_reads_from_the_end_and_from_start_from_the_start(
    logs: Path, clock: FakeClock
) -> None:
    write(logs / "access.log", lines(3) + "1700000000.5 part")
    watcher = Watcher([str(logs / "access.log")], clock)
    watcher.start(None, from_start=False)
    end_of_last_line = len(lines(3))
    assert followed(watcher) == [("access.log", end_of_last_line)]
    again = Watcher([str(logs / "access.log")], clock)
    again.start(None, from_start=True)
    assert followed(again) == [("access.log", 0)]


def test_a_glob_follows_each_match_and_skips_compressed_files(logs: Path, clock: FakeClock) -> None:
    for name in ("a.log", "b.log", "c.log.gz"):
        write(logs / name, lines(1, name))
    watcher = Watcher([str(logs / "*.log*")], clock)
    watcher.start(None, from_start=True)
    assert sorted(followed(watcher)) == [("a.log", 0), ("b.log", 0)]


def test_a_file_that_appears_later_is_read_from_its_start_once_it_has_a_line(
    logs: Path, clock: FakeClock
) -> None:
    watcher = Watcher([str(logs / "*.log")], clock)
    watcher.start(None, from_start=False)
    assert watcher.files == []
    (logs / "new.log").write_text("")
    assert watcher.poll() == []
    assert watcher.files == []  # empty: it may yet turn out to be a copy
    write(logs / "new.log", lines(2))
    watcher.poll()
    assert followed(watcher) == [("new.log", 0)]


def test_rename_and_create(logs: Path, clock: FakeClock) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    watcher = Watcher([str(log)], clock, rotate_wait=5)
    watcher.start(None, from_start=True)
    read_all(watcher)
    old = watcher.files[0]
    os.rename(log, logs / "access.log.1")
    write(logs / "access.log.1", lines(2, "late"))  # the server writes on until it reopens
    write(log, lines(1, "new"))
    assert watcher.poll() == []
    assert followed(watcher) == [("access.log.1", len(lines(5))), ("access.log", 0)]
    assert watcher.files[0] is old
    new = watcher.files[1]
    assert watcher.readable() == [old]  # the rest of the old one first
    old.position = old.size
    assert watcher.readable() == [new]
    old.position = 0
    old.waiting = old.size  # a partial last line holds nothing back
    assert watcher.readable() == [new]
    old.waiting = -1
    # Read to its end and idle for --rotate-wait: closed, but still known.
    read_all(watcher)
    old.open()
    clock.advance(5)
    watcher.poll()
    assert old.fd is None
    assert old in watcher.files


def test_copytruncate_reads_the_rest_of_the_old_content_from_the_copy(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    watcher = Watcher([str(log)], clock)
    watcher.start(None, from_start=True)
    f = watcher.files[0]
    f.position = f.offset = len(lines(3))  # two lines not read yet
    first_line = f.first_line or f.identity()
    shutil.copy(log, logs / "access.log.1")
    os.truncate(log, 0)
    write(log, lines(1, "fresh"))
    assert watcher.poll() == [f]
    watcher.replaced(f)
    assert followed(watcher) == [("access.log.1", len(lines(3))), ("access.log", 0)]
    copy = watcher.files[0]
    assert copy.first_line == first_line
    assert copy.key != f.key
    assert (f.generation, f.first_line) == (1, None)


def test_a_new_file_with_the_same_first_line_is_no_copy_if_it_differs_after(
    logs: Path, clock: FakeClock
) -> None:
    write(logs / "a.log", "1700000000.000 a.com\n1700000001.000 a.com\n")
    watcher = Watcher([str(logs / "*.log")], clock)
    watcher.start(None, from_start=True)
    write(logs / "b.log", "1700000000.000 a.com\n1700000005.000 b.com\n")
    watcher.poll()
    assert sorted(followed(watcher)) == [("a.log", 0), ("b.log", 0)]


def test_a_new_log_that_begins_as_an_old_one_did_is_read_once_it_differs(
    logs: Path, clock: FakeClock
) -> None:
    """Two rotations in one second: the new log's first lines are byte for byte the
    previous one's (same second, same requests), so it looks like a copy, at first."""
    log = logs / "access.log"
    same = "1700000000.000 a.com\n1700000000.000 b.com\n"
    write(log, same + "1700000000.000 c.com\n")
    watcher = Watcher([str(log)], clock)
    watcher.start(None, from_start=True)
    read_all(watcher)
    watcher.files[0].identity()
    os.rename(log, logs / "access.log.1")
    write(log, same)
    watcher.poll()
    assert followed(watcher) == [("access.log.1", len(same) + 21)]  # a copy, so far
    write(log, "1700000001.000 d.com\n")
    watcher.poll()
    assert followed(watcher) == [("access.log.1", len(same) + 21), ("access.log", 0)]


def test_a_new_log_alike_for_more_than_64_kib_is_told_apart_as_it_grows(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    alike = "".join(f"1700000000.000 h{i % 3}.com\n" for i in range(5000))  # 105 KB
    write(log, alike + "1700000000.000 end.com\n")
    watcher = Watcher([str(log)], clock)
    watcher.start(None, from_start=True)
    read_all(watcher)
    watcher.files[0].identity()
    os.rename(log, logs / "access.log.1")
    write(log, alike)
    watcher.poll()
    assert len(watcher.files) == 1  # taken for a copy
    write(log, "1700000001.000 next.com\n")
    watcher.poll()
    assert followed(watcher) == [("access.log.1", len(alike) + 23), ("access.log", 0)]


def test_a_new_log_that_begins_with_all_of_an_old_one_is_read_once_it_is_longer(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    alike = "".join(f"1700000000.000 h{i % 3}.com\n" for i in range(300))
    write(log, alike)
    watcher = Watcher([str(log)], clock)
    watcher.start(None, from_start=True)
    read_all(watcher)
    watcher.files[0].identity()
    os.rename(log, logs / "access.log.1")
    write(log, alike)  # all of the old one, so far
    watcher.poll()
    assert len(watcher.files) == 1
    write(log, alike)  # and more: longer than what it would be a copy of
    watcher.poll()
    assert len(watcher.files) == 1  # once could be a race with a copy being written
    watcher.poll()
    assert followed(watcher) == [("access.log.1", len(alike)), ("access.log", 0)]


def test_a_second_copytruncate_reads_from_the_new_copy_not_the_old(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    write(log, lines(5, "first"))
    watcher = Watcher([str(log)], clock)
    watcher.start(None, from_start=True)
    for generation, tag in ((1, "second"), (2, "third")):
        read_all(watcher)
        f = watcher.files[-1]
        f.identity()
        if (logs / "access.log.1").exists():
            os.rename(logs / "access.log.1", logs / "access.log.2")
        shutil.copy(log, logs / "access.log.1")
        os.truncate(log, 0)
        write(log, lines(3, tag))
        assert watcher.poll() == [f]
        watcher.replaced(f)
        assert f.generation == generation
    names = [os.path.basename(f.path) for f in watcher.files]
    assert names == ["access.log.2", "access.log.1", "access.log"]
    assert [f.position for f in watcher.files] == [
        len(lines(5, "first")),
        len(lines(3, "second")),
        0,
    ]


def test_a_copy_matched_by_the_glob_is_not_read_twice(logs: Path, clock: FakeClock) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    watcher = Watcher([str(logs / "access.log*")], clock)
    watcher.start(None, from_start=True)
    read_all(watcher)
    shutil.copy(log, logs / "access.log.1")
    watcher.poll()
    assert followed(watcher) == [("access.log", len(lines(5)))]
    assert [copy.path for copy in watcher.copies.values()] == [str(logs / "access.log.1")]
    os.truncate(log, 0)
    [f] = watcher.poll()
    watcher.replaced(f)
    # The copy holds nothing past what was read: it is followed from there, at its end.
    assert followed(watcher) == [("access.log.1", len(lines(5))), ("access.log", 0)]


def test_a_deleted_file_is_read_to_its_end_then_forgotten(logs: Path, clock: FakeClock) -> None:
    log = logs / "access.log"
    write(log, lines(2))
    watcher = Watcher([str(log)], clock, rotate_wait=1)
    watcher.start(None, from_start=True)
    f = watcher.files[0]
    fd = f.open()
    os.unlink(log)
    watcher.poll()
    assert watcher.files == [f]  # still open, not read: kept
    assert os.pread(fd, 100, 0).startswith(b"1700000000.000")
    read_all(watcher)
    clock.advance(1)
    watcher.poll()
    assert f.fd is None
    watcher.poll()
    assert watcher.files == []


# -- at start-up, from a state --------------------------------------------------


def saved(f: LogFile, offset: int, pending: Pending | None = None) -> FileState:
    return FileState(f.origin, f.path, f.dev, f.ino, f.first_line, f.generation, offset, pending)


def first_run(log: Path, clock: FakeClock, pattern: str | None = None) -> Watcher:
    watcher = Watcher([pattern or str(log)], clock)
    watcher.start(None, from_start=True)
    watcher.files[0].identity()
    return watcher


def test_a_known_file_resumes_at_its_offset_whatever_the_flags(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    f = first_run(log, clock).files[0]
    state = State(patterns=[str(log)], files=[saved(f, 42)])
    for from_start in (False, True):
        watcher = Watcher([str(log)], clock)
        watcher.start(state, from_start=from_start)
        assert followed(watcher) == [("access.log", 42)]


def test_a_file_renamed_while_stopped_is_found_beside_its_path(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    f = first_run(log, clock).files[0]
    state = State(patterns=[str(log)], files=[saved(f, 42)])
    os.rename(log, logs / "access.log-20250101")
    write(log, lines(1, "new"))
    watcher = Watcher([str(log)], clock)
    watcher.start(state, from_start=False)
    # The new file appeared under a followed path while stopped: from its start.
    assert followed(watcher) == [("access.log-20250101", 42), ("access.log", 0)]


def test_a_new_path_is_read_from_its_end_a_known_glob_from_the_start(
    logs: Path, clock: FakeClock
) -> None:
    write(logs / "a.log", lines(2, "a"))
    state = State(patterns=[str(logs / "*.log")], files=[])
    write(logs / "b.log", lines(3, "b"))
    watcher = Watcher([str(logs / "*.log"), str(logs / "other.txt")], clock)
    write(logs / "other.txt", lines(4, "o"))
    watcher.start(state, from_start=False)
    assert sorted(followed(watcher)) == [("a.log", 0), ("b.log", 0), ("other.txt", len(lines(4)))]


def test_copytruncate_while_stopped_resumes_in_the_copy_with_its_pending_batch(
    logs: Path, clock: FakeClock
) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    f = first_run(log, clock).files[0]
    pending = Pending(20, 60, "tail1-key")
    state = State(patterns=[str(log)], files=[saved(f, 20, pending)])
    shutil.copy(log, logs / "access.log.1")
    os.truncate(log, 0)
    write(log, lines(1, "fresh"))
    watcher = Watcher([str(log)], clock)
    watcher.start(state, from_start=False)
    copy, original = watcher.files
    assert (os.path.basename(copy.path), copy.offset, copy.pending) == ("access.log.1", 20, pending)
    assert (original.key, original.generation, original.offset) == (f.key, 1, 0)


def test_a_reused_inode_is_a_new_file(logs: Path, clock: FakeClock) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    f = first_run(log, clock).files[0]
    state = State(patterns=[str(log)], files=[saved(f, 42)])
    with log.open("r+") as out:  # same inode, other content: as if reused
        out.write("1700009999.000 other.com\n")
    watcher = Watcher([str(log)], clock)
    watcher.start(state, from_start=False)
    [g] = watcher.files
    assert (g.key, g.generation, g.offset) == (f.key, 1, 0)


def test_a_gone_file_with_a_pending_batch_is_reported(
    logs: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = logs / "access.log"
    write(log, lines(5))
    f = first_run(log, clock).files[0]
    state = State(patterns=[str(log)], files=[saved(f, 0, Pending(0, 30, "k"))])
    os.unlink(log)
    watcher = Watcher([str(log)], clock)
    watcher.start(state, from_start=False)
    assert watcher.files == []
    assert "its pending batch 0-30: it may or may not have been counted" in caplog.text


def test_first_line_checksum_waits_for_a_complete_line(logs: Path) -> None:
    log = logs / "x.log"
    log.write_bytes(b"no newline yet")
    fd = os.open(log, os.O_RDONLY)
    try:
        assert first_line_checksum(fd) is None
        write(log, "\nsecond\n")
        one = first_line_checksum(fd)
        write(log, "third\n")
        assert first_line_checksum(fd) == one
        log.write_bytes(b"x" * 2000)  # a first line longer than 1 KiB: its first 1 KiB
        assert first_line_checksum(fd) is not None
    finally:
        os.close(fd)
