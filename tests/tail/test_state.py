"""The state file: round trip, atomic writes, and a clear error for anything unusable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tophosts.tail import state
from tophosts.tail.state import FileState, Pending, State, StateError


def sample() -> State:
    return State(
        patterns=["/var/log/nginx/*.log"],
        files=[
            FileState("/l/a.log", "/l/a.log", 2049, 11, "00aa", 0, 120),
            FileState(
                "/l/b.log",
                "/l/b.log.1",
                2049,
                12,
                "00bb",
                2,
                40,
                Pending(40, 90, "tail1-2049-12-00bb-g2-40-90", [(1700000000, "a.com")]),
            ),
        ],
    )


def test_a_saved_state_loads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "tail.state"
    state.save(path, sample())
    assert state.load(path) == sample()
    assert os.listdir(tmp_path) == ["tail.state"]  # no temporary file left behind


def test_no_file_is_no_state(tmp_path: Path) -> None:
    assert state.load(tmp_path / "missing") is None


def test_a_failed_write_leaves_the_old_state_and_no_litter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tail.state"
    state.save(path, sample())
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        state.save(path, State(patterns=["other"]))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["tail.state"]


def test_the_write_is_fsynced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    path = tmp_path / "tail.state"

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    state.save(path, sample())
    assert calls == ["fsync file", "rename", "fsync dir"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"format": "tophosts-tail-state", "version": 1, "files": [', "corrupt (not JSON"),
        (b"", "corrupt (not JSON"),
        (b'{"format": "tophosts-tail-state", "version": 7}', "has version 7"),
        (b'{"version": 1, "files": []}', "is not a tophosts tail state file"),
        (
            b'{"format": "tophosts-tail-state", "version": 1, "files": [{"path": "x"}]}',
            "is corrupt (Object missing required field",
        ),
        (
            b'{"format":"tophosts-tail-state","version":1,"files":[{"origin":"a","path":"a",'
            b'"dev":1,"ino":2,"first_line":null,"generation":0,"offset":10,'
            b'"pending":{"start":5,"end":9,"key":"k"}}]}',
            "pending range 5-9 does not start at its offset 10",
        ),
    ],
)
def test_an_unusable_state_is_one_clear_error(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "tail.state"
    path.write_bytes(content)
    with pytest.raises(StateError) as error:
        state.load(path)
    message = str(error.value)
    assert says in message
    assert str(path) in message
    assert "move it away" in message or "another path" in message


def test_one_state_file_one_shipper(tmp_path: Path) -> None:
    path = tmp_path / "tail.state"
    with state.Lock(path), pytest.raises(StateError, match="another tophosts tail holds"):
        state.Lock(path).__enter__()
    with state.Lock(path):  # released by the first
        pass


def test_a_lock_in_an_unwritable_place_says_where(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"cannot create .*missing/tail\.state\.lock"):
        state.Lock(tmp_path / "missing" / "tail.state").__enter__()
