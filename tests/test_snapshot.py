from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import pytest

from tests.support.clock import T0, FakeClock
from tests.support.servers import Server
from tests.support.wait import until
from tophosts import idempotency, snapshot
from tophosts.app import create_app
from tophosts.config import Settings, SettingsError
from tophosts.idempotency import KeyConflict
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
    snapshot.save(filled_store(clock), path)
    fresh = MemoryStore(clock=clock)
    assert snapshot.restore(fresh, path) == 3  # past minute, its hour, the past hour
    assert fresh.top_now(Window.MINUTE, 10) == [("a.com", 3), ("b.com", 1)]
    assert fresh.top_now(Window.HOUR, 10) == [("h.com", 7)]


def test_windows_that_expired_while_down_are_dropped(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    snapshot.save(filled_store(clock), path)
    clock.advance(3600)  # the old past hour is gone; T0's hour is now the past one
    fresh = MemoryStore(clock=clock)
    assert snapshot.restore(fresh, path) == 1
    assert fresh.top_now(Window.HOUR, 10) == [("a.com", 3), ("b.com", 1)]
    assert fresh.top_now(Window.MINUTE, 10) == []


def test_a_snapshot_keeps_the_idempotency_keys_until_they_expire(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "snap"
    store = MemoryStore(clock=clock, idempotency_ttl=600)
    event = [(PAST_HOUR, {"k.com": 1})]
    first = (idempotency.digest(b"first"), 123)
    store.add_now(event, first)
    clock.advance(300)
    later = (idempotency.digest(b"later"), 456)
    store.add_now([(0, {"old.com": 1})], later)  # expired: kept too
    snapshot.save(store, path)
    fresh = MemoryStore(clock=clock, idempotency_ttl=600)
    snapshot.restore(fresh, path)
    assert asyncio.run(fresh.sizes()).keys == 2
    assert fresh.add_now(event, first) == (1, 0, 0, True)
    assert fresh.add_now([(0, {"old.com": 1})], later) == (0, 1, 0, True)
    with pytest.raises(KeyConflict):
        fresh.add_now(event, (first[0], 999))
    # Restored later, the first key (used 300 s before the second) has expired.
    clock.advance(400)
    again = MemoryStore(clock=clock, idempotency_ttl=600)
    snapshot.restore(again, path)
    assert asyncio.run(again.sizes()).keys == 1
    assert again.add_now([(0, {"old.com": 1})], later).replayed


def test_a_snapshot_written_before_idempotency_keys_still_loads(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "snap"
    windows = [[3600, PAST_HOUR, {"h.com": 7}]]
    path.write_bytes(msgspec.msgpack.encode({"version": 1, "taken_at": 0.0, "windows": windows}))
    store = MemoryStore(clock=clock)
    assert snapshot.restore(store, path) == 1
    assert store.top_now(Window.HOUR, 10) == [("h.com", 7)]
    assert asyncio.run(store.sizes()).keys == 0


def test_a_missing_snapshot_starts_empty(tmp_path: Path, clock: FakeClock) -> None:
    assert snapshot.restore(MemoryStore(clock=clock), tmp_path / "none") == 0


def corrupt_files(tmp_path: Path, clock: FakeClock) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good"
    snapshot.save(filled_store(clock), good)
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
    snapshot.save(filled_store(clock), path)
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
        history = None

    with pytest.raises(SettingsError, match="the redis store keeps its own data"):
        create_app(Settings(snapshot=str(tmp_path / "s")), store=cast(Store, RemoteStore()))


def test_a_snapshot_carries_the_history(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "snap"
    store = MemoryStore(clock=clock, retention=86400, history_top=2)
    store.add_now([(PAST_MINUTE, {"a.com": 3, "b.com": 2, "c.com": 1})])
    clock.advance(600)  # the minute froze
    asyncio.run(store.freeze())
    snapshot.save(store, path)
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
    snapshot.save(filled_store(clock), path)
    clock.advance(300)  # the past minute froze meanwhile; its hour is still live
    fresh = MemoryStore(clock=clock, retention=86400, history_top=10)
    assert snapshot.restore(fresh, path) == 3
    assert fresh.closed_now(Window.MINUTE, [PAST_MINUTE], 10) == [[("a.com", 3), ("b.com", 1)]]
    asyncio.run(fresh.freeze())
    assert fresh.dump_history() == [(60, PAST_MINUTE, ["a.com", "b.com"], [3, 1])]


def test_a_forked_snapshot_carries_the_keys_and_the_history_together(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "snap"
    store = MemoryStore(clock=clock, retention=86400, history_top=2)
    key = (idempotency.digest(b"k"), 42)
    event = [(PAST_MINUTE, {"a.com": 3, "b.com": 2, "c.com": 1})]
    assert not store.add_now(event, key).replayed
    clock.advance(3600)  # the minute froze, its hour is the past one; the key is kept
    asyncio.run(store.freeze())
    asyncio.run(snapshot.BackgroundWriter(store, path).write())  # from a forked child
    written = snapshot.read(path)
    assert written is not None
    assert [len(k[2]) for k in written.keys] == [1]
    assert written.history == [(60, PAST_MINUTE, ["a.com", "b.com"], [3, 2])]
    fresh = MemoryStore(clock=clock, retention=86400, history_top=2)
    assert snapshot.restore(fresh, path) == 2  # the frozen minute, and its hour (live)
    assert fresh.closed_now(Window.MINUTE, [PAST_MINUTE], 2) == [[("a.com", 3), ("b.com", 2)]]
    assert fresh.add_now(event, key) == (1, 0, 0, True)  # a replay: not counted again
    assert fresh.top_now(Window.HOUR, 3) == [("a.com", 3), ("b.com", 2), ("c.com", 1)]


def test_an_older_snapshot_without_history_still_loads(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "old"
    windows = [[60, PAST_MINUTE, {"a.com": 2}]]
    path.write_bytes(msgspec.msgpack.encode({"version": 1, "taken_at": 0.0, "windows": windows}))
    store = MemoryStore(clock=clock, retention=86400)
    assert snapshot.restore(store, path) == 1
    assert store.top_now(Window.MINUTE, 10) == [("a.com", 2)]


# -- the background writer -------------------------------------------------------


def big_store(clock: FakeClock, hosts: int) -> MemoryStore:
    """``hosts`` distinct hosts in the past minute: twice as many (host, window) pairs, as
    each counts in the minute and in its hour."""
    store = MemoryStore(clock=clock, max_tracked_hosts=10 * hosts)
    for first in range(0, hosts, 10_000):
        names = range(first, min(first + 10_000, hosts))
        store.add_now([(PAST_MINUTE, {f"h{n}.example.net": 1 + n % 7 for n in names})])
    return store


def in_children_only(parent: int, action: Callable[[], Any], real: Callable[..., Any]) -> Any:
    """A stand-in for ``real`` that runs ``action`` first in a forked child, never in ``parent``."""

    def stand_in(*args: Any) -> Any:
        if os.getpid() != parent:
            action()
        return real(*args)

    return stand_in


def hang() -> None:
    time.sleep(120)


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return 0


async def worst_per_snapshot(
    store: MemoryStore, path: Path, snapshots: int
) -> tuple[list[float], list[float]]:
    """For each periodic snapshot written, the loop's worst 1 ms sleep: how late it woke
    (ms of wall time) and how much CPU the loop's thread used meanwhile (ms)."""
    late: list[float] = []
    busy: list[float] = []
    async with snapshot.periodic(store, path, 0.02):
        current, lag, cpu, deadline = inode(path), 0.0, 0.0, time.monotonic() + 120
        while len(late) < snapshots and time.monotonic() < deadline:
            wall, thread = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            lag = max(lag, (time.perf_counter() - wall - 0.001) * 1000)
            cpu = max(cpu, (time.thread_time() - thread) * 1000)
            if inode(path) != current:  # a snapshot was renamed into place
                current = inode(path)
                late.append(round(lag, 1))
                busy.append(round(cpu, 1))
                lag = cpu = 0.0
    return late, busy


@pytest.mark.slow
def test_the_loop_keeps_serving_while_two_million_pairs_are_snapshotted(
    tmp_path: Path, clock: FakeClock
) -> None:
    """What a snapshot takes from the loop is the CPU its thread spends in the snapshot
    between two wake-ups of a 1 ms sleep: wall-clock lateness also holds the neighbours'
    preemption (on the shared 2-core machine, over 1 s for a server with no snapshots).

    With 1M hosts in a live minute (2M (host, window) pairs), the old write (dump in the
    loop, then encode in a thread that holds the GIL) took 38-44 ms of the loop's CPU per
    snapshot, and its wall lateness was 90-290 ms; forked, 6-9 ms (the fork), 12-80 ms
    late with the machine at load 8. The median of five leaves room for a neighbour.
    """
    store = big_store(clock, 1_000_000)
    path = tmp_path / "snap"
    late, busy = asyncio.run(worst_per_snapshot(store, path, snapshots=5))
    assert len(busy) == 5
    assert statistics.median(busy) < 20, (busy, late)
    written = snapshot.read(path)
    assert written is not None
    sizes = sorted((size, len(counts)) for size, _, counts in written.windows)
    assert sizes == [(60, 1_000_000), (3600, 1_000_000)]
    minute = next(counts for size, _, counts in written.windows if size == 60)
    assert minute["h999999.example.net"] == 1 + 999_999 % 7


def test_each_snapshot_is_one_point_in_time(tmp_path: Path, clock: FakeClock) -> None:
    """Batches keep arriving while snapshots are written: each holds every batch whole or
    not at all (every host of a batch has the same count), and none is older than the last."""
    store = MemoryStore(clock=clock)
    hosts = [f"h{n}.example" for n in range(2000)]
    batch = [(PAST_MINUTE, dict.fromkeys(hosts[:1000], 1)), (PAST_HOUR, dict.fromkeys(hosts, 1))]
    path = tmp_path / "snap"

    async def run() -> list[dict[tuple[int, int], set[int]]]:
        seen: list[dict[tuple[int, int], set[int]]] = []
        async with snapshot.periodic(store, path, 0.01):
            current = inode(path)
            while len(seen) < 5:
                store.add_now(batch)
                await asyncio.sleep(0)
                if inode(path) != current:
                    current = inode(path)
                    windows = snapshot.read(path)
                    assert windows is not None
                    seen.append({(w[0], w[1]): set(w[2].values()) for w in windows.windows})
        return seen

    seen = asyncio.run(run())
    applied = []
    for windows in seen:
        minute, past_hour = windows[(60, PAST_MINUTE)], windows[(3600, PAST_HOUR)]
        assert len(minute) == len(past_hour) == 1  # one count for every host of the window
        applied.append(minute.pop())
        assert past_hour == {applied[-1]}  # the past hour got each batch too, once
    assert applied == sorted(applied)
    assert applied[-1] > 0


def test_killing_the_writer_mid_write_keeps_the_previous_snapshot(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "snap"
    snapshot.save(filled_store(clock), path)
    before = path.read_bytes()
    store = big_store(clock, 10_000)
    # The child writes its whole file and then hangs before the fsync and rename.
    monkeypatch.setattr(os, "fsync", in_children_only(os.getpid(), hang, os.fsync))

    async def run() -> None:
        writer = snapshot.BackgroundWriter(store, path)
        task = asyncio.create_task(writer.write())
        await wait_for(lambda: writer.child is not None)
        assert writer.child is not None
        tmp, pid = writer.child.tmp, writer.child.pid
        await wait_for(lambda: tmp.exists() and tmp.stat().st_size > 100_000)
        with pytest.raises(RuntimeError, match="being written already"):
            await writer.write()  # never two at once
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(snapshot.SnapshotFailed, match=f"pid {pid}. was killed by signal 9"):
            await task
        assert writer.child is None

    asyncio.run(run())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]  # the partial file is gone


def test_a_failed_background_write_is_logged_and_the_next_one_succeeds(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later" / "snap"  # no such directory yet
    store = filled_store(clock)

    async def run() -> None:
        async with snapshot.periodic(store, path, 0.01):
            await wait_for(lambda: "failed" in caplog.text)
            path.parent.mkdir()
            await wait_for(lambda: "by pid" in caplog.text)

    with caplog.at_level(logging.INFO, "tophosts.snapshot"):
        asyncio.run(run())
    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert failure.getMessage() == (
        f"snapshot to {path} failed: No such file or directory: "
        f"{path.parent}/.snap.{failure.getMessage().split('.snap.')[1].split('.')[0]}.tmp; "
        "the previous snapshot is kept"
    )
    assert f"snapshot written to {path} in " in caplog.text
    fresh = MemoryStore(clock=clock)
    assert snapshot.restore(fresh, path) == 3


def test_at_shutdown_a_writer_at_work_is_stopped_and_the_last_snapshot_written_in_process(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "snap"
    store = filled_store(clock)
    monkeypatch.setattr(store, "dump", in_children_only(os.getpid(), hang, store.dump))

    async def run() -> None:
        async with snapshot.periodic(store, path, 0.01):
            await wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()))
            store.add_now([(PAST_MINUTE, {"late.com": 2})])

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 10  # the hung writer was killed, not waited for
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]
    fresh = MemoryStore(clock=clock)
    snapshot.restore(fresh, path)
    assert fresh.top_now(Window.MINUTE, 10) == [("a.com", 3), ("late.com", 2), ("b.com", 1)]


# -- real processes ------------------------------------------------------------


def post_past_hour(url: str, counts: dict[str, int]) -> None:
    ts = int(time.time()) - 3600
    response = httpx.post(url + "/counter", json={"timestamp": ts, **counts})
    assert response.json() == {"status": "ok"}


def hour_top(url: str) -> dict[str, int]:
    return dict(httpx.get(url + "/stats", params={"stats_type": "hour"}).json()["top_hosts"])


@pytest.mark.e2e
def test_sigterm_then_restart_keeps_the_counts_exactly(tmp_path: Path) -> None:
    """Background snapshots run all along (every 0.1 s); the one SIGTERM writes holds
    every count, and the writers leave no temporary file behind."""
    path = tmp_path / "snap"
    rng = random.Random(8)
    expected: dict[str, int] = {}
    first = Server("--snapshot", str(path), "--snapshot-interval", "0.1")
    for _ in range(40):
        counts = {f"h{rng.randrange(300)}.example": rng.randrange(1, 1000) for _ in range(20)}
        post_past_hour(first.url, counts)
        for host, n in counts.items():
            expected[host] = expected.get(host, 0) + n
        time.sleep(0.01)
    first.proc.send_signal(signal.SIGTERM)
    code, out = first.stop()
    assert code == 0, out
    assert "by pid" in out  # background snapshots were written meanwhile
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]
    second = Server("--snapshot", str(path))
    try:
        top = httpx.get(second.url + "/stats", params={"stats_type": "hour", "limit": 1000})
        assert top.json()["top_hosts"] == dict(
            sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
        )
    finally:
        second.stop()


@pytest.mark.e2e
def test_kill_9_loses_at_most_one_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "snap")
    first = Server("--snapshot", path, "--snapshot-interval", "0.5")
    post_past_hour(first.url, {"kept.com": 4})
    # Two writes done since: the second began after the first ended, after the post.
    posted, writes = time.time_ns(), set()

    def written_twice() -> bool:
        with contextlib.suppress(FileNotFoundError):
            if (mtime := os.stat(path).st_mtime_ns) > posted:
                writes.add(mtime)
        return len(writes) >= 2

    until(written_twice, what="two snapshot writes")
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
