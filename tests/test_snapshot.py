from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import cast

import httpx
import msgspec
import pytest

from tests.support.clock import T0, FakeClock
from tests.support.servers import Server
from tophosts import snapshot
from tophosts.app import create_app
from tophosts.config import Settings, SettingsError
from tophosts.store import Store
from tophosts.store.memory import MemoryStore
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
PAST_HOUR = past(T0, Window.HOUR).start


def filled_store(clock: FakeClock) -> MemoryStore:
    store = MemoryStore(clock=clock)
    store.add_now([(PAST_MINUTE, {"a.com": 3, "b.com": 1}), (PAST_HOUR, {"h.com": 7})])
    return store


def test_a_snapshot_round_trips_every_live_window(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    asyncio.run(snapshot.save(filled_store(clock), path))
    fresh = MemoryStore(clock=clock)
    assert snapshot.restore(fresh, path) == 3  # past minute, its hour, the past hour
    assert fresh.top_now(Window.MINUTE, 10) == [("a.com", 3), ("b.com", 1)]
    assert fresh.top_now(Window.HOUR, 10) == [("h.com", 7)]


def test_windows_that_expired_while_down_are_dropped(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    asyncio.run(snapshot.save(filled_store(clock), path))
    clock.advance(3600)  # the old past hour is gone; T0's hour is now the past one
    fresh = MemoryStore(clock=clock)
    assert snapshot.restore(fresh, path) == 1
    assert fresh.top_now(Window.HOUR, 10) == [("a.com", 3), ("b.com", 1)]
    assert fresh.top_now(Window.MINUTE, 10) == []


def test_a_missing_snapshot_starts_empty(tmp_path: Path, clock: FakeClock) -> None:
    assert snapshot.restore(MemoryStore(clock=clock), tmp_path / "none") == 0


def corrupt_files(tmp_path: Path, clock: FakeClock) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good"
    asyncio.run(snapshot.save(filled_store(clock), good))
    data = good.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "is corrupt"),
        "garbage": (b"\x00\xffnot msgpack at all\xc1", "is corrupt"),
        "wrong version": (
            msgspec.msgpack.encode({"version": 99, "taken_at": 0.0, "windows": []}),
            "format version 99",
        ),
        "bad count": (
            msgspec.msgpack.encode(
                {"version": 1, "taken_at": 0.0, "windows": [[60, 0, {"a": -1}]]}
            ),
            "is corrupt",
        ),
    }
    out = {}
    for name, (content, words) in files.items():
        path = tmp_path / name.replace(" ", "_")
        path.write_bytes(content)
        out[name] = (path, words)
    return out


@pytest.mark.parametrize("case", ["truncated", "garbage", "wrong version", "bad count"])
def test_an_unreadable_snapshot_fails_clearly(tmp_path: Path, clock: FakeClock, case: str) -> None:
    path, words = corrupt_files(tmp_path, clock)[case]
    with pytest.raises(snapshot.SnapshotError) as info:
        snapshot.restore(MemoryStore(clock=clock), path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("case", ["truncated", "garbage", "wrong version"])
def test_ignore_corrupt_starts_empty_with_a_warning(
    tmp_path: Path, clock: FakeClock, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = corrupt_files(tmp_path, clock)[case]
    store = MemoryStore(clock=clock)
    with caplog.at_level(logging.WARNING):
        assert snapshot.restore(store, path, ignore_corrupt=True) == 0
    assert "starting empty" in caplog.text
    assert store.top_now(Window.HOUR, 10) == []


def test_a_failed_write_leaves_the_previous_snapshot(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    asyncio.run(snapshot.save(filled_store(clock), path))
    before = path.read_bytes()

    class Boom(Exception):
        pass

    def explode(*args: object) -> None:
        raise Boom

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("os.fsync", explode)
        with pytest.raises(Boom):
            snapshot.write(path, [], 0.0)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]


def test_snapshots_are_refused_for_other_stores(tmp_path: Path) -> None:
    class RemoteStore:
        kind = "redis"
        sync = None
        snapshots = None  # it declares no snapshot support

    with pytest.raises(SettingsError, match="the redis store keeps its own data"):
        create_app(Settings(snapshot=str(tmp_path / "s")), store=cast(Store, RemoteStore()))


def test_a_snapshot_carries_the_history(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    store = MemoryStore(clock=clock, retention=86400, history_top=2)
    store.add_now([(PAST_MINUTE, {"a.com": 3, "b.com": 2, "c.com": 1})])
    clock.advance(600)  # the minute froze
    asyncio.run(store.freeze())
    asyncio.run(snapshot.save(store, path))
    clock.advance(3600)
    fresh = MemoryStore(clock=clock, retention=86400, history_top=2)
    assert snapshot.restore(fresh, path) == 2  # the frozen minute, and its hour (live)
    assert fresh.closed_now(Window.MINUTE, [PAST_MINUTE], 2) == [[("a.com", 3), ("b.com", 2)]]
    assert fresh.top_now(Window.HOUR, 1) == [("a.com", 3)]
    # With history off, only the live hour is kept.
    off = MemoryStore(clock=clock)
    assert snapshot.restore(off, path) == 1
    assert off.dump_history() == []
    # Past the retention, nothing is.
    clock.advance(2 * 86400)
    assert snapshot.restore(MemoryStore(clock=clock, retention=86400), path) == 0


def test_windows_that_froze_while_down_are_frozen_on_restore(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "snap"
    asyncio.run(snapshot.save(filled_store(clock), path))
    clock.advance(300)  # the past minute froze meanwhile; its hour is still live
    fresh = MemoryStore(clock=clock, retention=86400, history_top=10)
    assert snapshot.restore(fresh, path) == 3
    assert fresh.closed_now(Window.MINUTE, [PAST_MINUTE], 10) == [[("a.com", 3), ("b.com", 1)]]
    asyncio.run(fresh.freeze())
    assert fresh.dump_history() == [(60, PAST_MINUTE, ["a.com", "b.com"], [3, 1])]


def test_an_older_snapshot_without_history_still_loads(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "old"
    windows = [[60, PAST_MINUTE, {"a.com": 2}]]
    path.write_bytes(msgspec.msgpack.encode({"version": 1, "taken_at": 0.0, "windows": windows}))
    store = MemoryStore(clock=clock, retention=86400)
    assert snapshot.restore(store, path) == 1
    assert store.top_now(Window.MINUTE, 10) == [("a.com", 2)]


# -- real processes ------------------------------------------------------------


def post_past_hour(url: str, counts: dict[str, int]) -> None:
    ts = int(time.time()) - 3600
    response = httpx.post(url + "/counter", json={"timestamp": ts, **counts})
    assert response.json() == {"status": "ok"}


def hour_top(url: str) -> dict[str, int]:
    return dict(httpx.get(url + "/stats", params={"stats_type": "hour"}).json()["top_hosts"])


@pytest.mark.e2e
def test_sigterm_then_restart_keeps_the_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    first = Server("--snapshot", path, "--snapshot-interval", "3600")
    post_past_hour(first.url, {"a.com": 5, "b.com": 2})
    first.proc.send_signal(signal.SIGTERM)
    code, out = first.stop()
    assert code == 0, out
    second = Server("--snapshot", path)
    try:
        assert hour_top(second.url) == {"a.com": 5, "b.com": 2}
    finally:
        second.stop()


@pytest.mark.e2e
def test_kill_9_loses_at_most_one_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    first = Server("--snapshot", path, "--snapshot-interval", "0.5")
    post_past_hour(first.url, {"kept.com": 4})
    time.sleep(1.5)  # at least one interval write has happened since
    first.proc.kill()
    first.proc.wait()
    second = Server("--snapshot", path)
    try:
        assert hour_top(second.url) == {"kept.com": 4}
    finally:
        second.stop()


@pytest.mark.e2e
def test_a_corrupt_snapshot_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="is corrupt") as info:
        Server("--snapshot", str(path))
    assert "exited with 2" in str(info.value)
    srv = Server("--snapshot", str(path), "--snapshot-ignore-corrupt")
    try:
        assert hour_top(srv.url) == {}
    finally:
        code, out = srv.stop()
    assert code == 0
    assert "starting empty" in out
