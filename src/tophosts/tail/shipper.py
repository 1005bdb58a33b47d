"""The shipper's loop: poll the files, read lines into batches, deliver each exactly once.

One thread does everything, one batch at a time, in this order for each batch:

1. its byte range and key are written to the state file as *pending*;
2. it is posted, and retried with the same key until the server settles it;
3. the state file is written again with the range acknowledged.

A crash between 1 and 3 leaves the pending range in the state, and the next
start re-sends exactly that range, rebuilt from the file, with the same key,
before it reads anything else: the server replays it if it had counted it.
Nothing is read past a batch that is not acknowledged, so during an outage the
log file is the buffer and memory stays bounded.

SIGTERM (or SIGINT) stops reading, sends what was read, waits up to
``--stop-timeout`` for it to be acknowledged, and exits 0; what could not be
acknowledged in that time stays pending in the state (exit 1).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tophosts.formats import LOG_FILE_FORMATS
from tophosts.tail import keys, state
from tophosts.tail.batch import Aggregator, Batch, Pair, read_into
from tophosts.tail.client import Acked, Client, Conflict, Fatal, Refused, Sender, Unfinished
from tophosts.tail.files import LogFile, Watcher, first_line_checksum
from tophosts.tail.metrics import Metrics
from tophosts.tail.progress import Ack, Progress
from tophosts.tail.settings import TailSettings

log = logging.getLogger("tophosts.tail")

READ_BUDGET = 8 << 20
"""Bytes read from one file before the loop looks at the others and at the clock."""
POLL_EVERY = 0.25
BAD_LINE_EVERY = 10.0
_AHEAD = "ahead of the server clock"
"""In the server's 400 for an event past --max-skew (tophosts.events.too_far_ahead)."""


class Stop(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Shipper:
    def __init__(
        self,
        settings: TailSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        stopping: threading.Event | None = None,
        progress: Progress | None = None,
        metrics: Metrics | None = None,
        sender: Sender | None = None,
        poll_every: float = POLL_EVERY,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stopping = stopping or threading.Event()
        self.progress = progress or Progress(clock)
        self.metrics = metrics or Metrics()
        self.state_path = Path(settings.state)
        self.poll_every = min(poll_every, settings.interval)
        self.aggregator = Aggregator(
            LOG_FILE_FORMATS[settings.format], self._bad, settings.max_batch
        )
        self.watcher = Watcher(settings.paths, clock, settings.rotate_wait)
        self.sender = sender or Sender(
            Client(settings.url, settings.ingest_token, settings.timeout),
            stopping=self.stopping,
            stop_timeout=settings.stop_timeout,
            clock=clock,
            on_answer=lambda status: self.metrics.batches.labels(status).inc(),
        )
        self._reading: LogFile | None = None
        self._next_bad_log = 0.0
        self._bad_since_log = 0

    # -- the whole run ------------------------------------------------------------

    def run(self) -> int:
        """Ship until stopped; the exit status."""
        try:
            with state.Lock(self.state_path):
                saved = state.load(self.state_path)
                self.watcher.start(saved, self.settings.from_start)
                self._save()
                self.progress.start()
                try:
                    self._resend_pending()
                    self._loop()
                    self.flush()
                finally:
                    self.progress.stop()
                    self.watcher.close()
        except Stop as stop:
            log.error("%s", stop.message)
            return stop.code
        except state.StateError as exc:
            log.error("%s", exc)
            return 2
        log.info("stopped; everything read was acknowledged")
        return 0

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT stop the loop; a second one stops at once (the state is safe)."""

        def stop(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                os._exit(1)
            log.info("%s: sending what was read, then stopping", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _save(self) -> None:
        state.save(self.state_path, self.watcher.state())
        self.watcher.changed = False

    # -- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        next_poll = 0.0
        while not self.stopping.is_set():
            next_poll, busy = self.step(next_poll)
            if not busy:
                self._idle(next_poll)

    def step(self, next_poll: float = 0.0) -> tuple[float, bool]:
        """One turn of the loop: poll the files if ``next_poll`` has come, read what there
        is to read, send what is due. Returns when to poll next, and whether there may
        be more to read right away."""
        now = self.clock()
        if now >= next_poll:
            for f in self.watcher.poll():
                self._truncated(f)
            if self.watcher.changed:
                self._save()
            next_poll = now + self.poll_every
        busy = False
        for f in self.watcher.readable():
            if self.stopping.is_set():
                break
            busy = self._read(f) or busy
        for f in self.watcher.files:
            if f.batch is not None and self._due(f.batch):
                self._deliver(f)
        self._report()
        return next_poll, busy

    def _idle(self, next_poll: float) -> None:
        wake = next_poll
        for f in self.watcher.files:
            if f.batch is not None:
                wake = min(wake, f.batch.opened + self.settings.interval)
        self.stopping.wait(max(0.005, wake - self.clock()))

    def _due(self, batch: Batch) -> bool:
        return self.stopping.is_set() or self.clock() - batch.opened >= self.settings.interval

    def _read(self, f: LogFile) -> bool:
        """Read ``f`` into its batch; whether there may be more to read right away."""
        try:
            fd = f.open()
        except OSError:
            f.waiting = f.size  # moved: the next poll finds it again by its inode
            return False
        if f.first_line is None:
            # The identity is taken from the content about to be read, now: taken
            # later (when the batch is sent) it could be of the content that a
            # copytruncate has put in its place since, and the rest of this one
            # could no longer be found in its copy.
            f.first_line = first_line_checksum(fd)
        if f.batch is None:
            f.batch = Batch(f.position, opened=self.clock())
        self._reading = f
        full, more = read_into(self.aggregator, fd, f.batch, READ_BUDGET)
        f.position = f.batch.end
        f.size = max(f.size, f.position)
        if not more:
            f.waiting = f.size
        if f.batch.end == f.batch.start:
            f.batch = None
        elif full:
            self._deliver(f)
        return more

    def flush(self) -> None:
        """Send every batch read (and wait for it to be acknowledged), then save the state."""
        for f in self.watcher.files:
            if f.batch is not None:
                self._deliver(f)
        self._save()

    def _truncated(self, f: LogFile) -> None:
        if f.batch is not None:
            self._deliver(f)  # what was read of the old content, under its old identity
        self.watcher.replaced(f)
        self._save()

    # -- delivery -----------------------------------------------------------------------

    def _resend_pending(self) -> None:
        """Re-send each pending range of the state first, rebuilt, with its own key."""
        for f in list(self.watcher.files):
            pending = f.pending
            if pending is None:
                continue
            log.info(
                "re-sending the pending batch %d-%d of %s with its key %s",
                pending.start,
                pending.end,
                f.path,
                pending.key,
            )
            self._reading = f
            try:
                batch = self.aggregator.rebuild(f.open(), pending.start, pending.end, pending.skip)
            except OSError as exc:
                log.error(
                    "cannot read the pending batch %d-%d of %s again (%s): it may or may not "
                    "have been counted; reading on after it",
                    pending.start,
                    pending.end,
                    f.path,
                    exc,
                )
                f.offset = f.position = pending.end
                f.pending = None
                self._save()
                continue
            f.position = batch.end
            f.batch = batch
            self._deliver(f, key=pending.key)

    def _deliver(self, f: LogFile, key: str | None = None) -> None:
        batch = f.batch
        assert batch is not None
        while True:
            if not batch.pairs():  # nothing to send: bad or refused lines only
                self._acked(f, batch, Acked(False, 0, 0))
                return
            if key is None:
                key = keys.derive(
                    f.dev, f.ino, f.identity(), f.generation, batch.start, batch.end, batch.skip
                )
                f.pending = state.Pending(batch.start, batch.end, key, list(batch.skip))
                self._save()
            outcome = self.sender.send(self.aggregator.body(batch), key)
            if isinstance(outcome, Acked):
                self._acked(f, batch, outcome)
                return
            if isinstance(outcome, Refused):
                self._refused(f, batch, outcome)
                key = None
                continue
            if isinstance(outcome, Conflict):
                log.warning(
                    "%s: the batch %d-%d of %s was already counted under its key %s for "
                    "another body (the file, or --format, changed since it was sent); it is "
                    "not sent again",
                    outcome.message,
                    batch.start,
                    batch.end,
                    f.path,
                    key,
                )
                self._acked(f, batch, Acked(True, 0, 0))
                return
            if isinstance(outcome, Fatal):
                raise Stop(1, outcome.message)
            assert isinstance(outcome, Unfinished)
            raise Stop(
                1,
                f"stopped with the batch {batch.start}-{batch.end} of {f.path} unacknowledged; "
                "it stays pending in the state, and the next start re-sends it",
            )

    def _refused(self, f: LogFile, batch: Batch, refusal: Refused) -> None:
        pairs = batch.pairs()
        if not 0 <= refusal.index < len(pairs):
            raise Stop(
                1,
                f"the server refused event {refusal.index} of a batch of {len(pairs)} "
                f"({refusal.message}); this tophosts tail does not understand that answer",
            )
        second, host = pairs[refusal.index]
        refused: list[Pair] = [(second, host)]
        if _AHEAD in refusal.message:
            # Later seconds are further ahead still: refused for the same reason.
            refused = [p for p in pairs if p[0] >= second]
        lines = sum(batch.counts[p] for p in refused)
        example = b""
        if f.fd is not None:
            example = self.aggregator.find_line(f.fd, batch, [(second, host)])
        log.warning(
            "the server refused %d line(s) of %s (%s); only they are skipped, e.g. %s",
            lines,
            f.path,
            refusal.message,
            _show(example),
        )
        batch.skip.extend((s, h.decode()) for s, h in refused)
        self.metrics.lines.labels("refused").inc(lines)
        self.progress.refused += lines

    def _acked(self, f: LogFile, batch: Batch, outcome: Acked) -> None:
        lines = batch.lines
        f.offset = batch.end
        f.position = max(f.position, batch.end)
        f.pending = None
        f.batch = None
        self._save()
        self.metrics.lines.labels("shipped").inc(lines)
        self.metrics.last_ack.set_to_current_time()
        self.progress.acked(
            Ack(f.path, batch.start, batch.end, len(batch.pairs()), outcome.replayed, self.clock()),
            lines,
        )
        log.debug(
            "acknowledged %s %d-%d: %d lines, %d events%s",
            f.path,
            batch.start,
            batch.end,
            lines,
            len(batch.pairs()),
            " (replayed)" if outcome.replayed else "",
        )

    # -- reporting ----------------------------------------------------------------------

    def _bad(self, line: bytes, reason: str) -> None:
        self.metrics.lines.labels("bad").inc()
        self.progress.bad += 1
        self._bad_since_log += 1
        now = self.clock()
        if now >= self._next_bad_log:
            path = self._reading.path if self._reading else "?"
            log.warning(
                "%d line(s) of %s not shipped since the last such report (one example every "
                "%d s): %s: %s",
                self._bad_since_log,
                path,
                BAD_LINE_EVERY,
                reason,
                _show(line),
            )
            self._next_bad_log = now + BAD_LINE_EVERY
            self._bad_since_log = 0

    def _report(self) -> None:
        lags = {f.path: f.lag for f in self.watcher.files}
        self.metrics.set_lags(lags)
        self.progress.tick(lags.items())


def _show(line: bytes, limit: int = 300) -> str:
    text = repr(line[:limit])[1:]
    return text + ("..." if len(line) > limit else "")
