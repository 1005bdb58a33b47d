"""Settling a write that got no reply: was it applied?

A call that was sent and got no reply (a timeout, a dropped connection) may
have applied. Before its requests are answered, Redis is asked (settle.lua)
once the call's start deadline has passed on its clock, when the answer can
no longer change: applied (200, with the requests' own refusals), not applied
(503), or, if Redis does not say within another timeout, unknown
(:class:`~tophosts.store.WriteUncertain`, a 504). Settling only reads, so it is
asked again when its own reply is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from tophosts.store import StoreUnavailable, WriteUncertain
from tophosts.store.redis.clock import RedisClock
from tophosts.store.redis.commit import (
    START_SHARE,
    Limits,
    Outcome,
    Request,
    Unsettled,
    refusals_of,
    resolve,
)
from tophosts.store.redis.connection import Failures, Link
from tophosts.store.redis.keys import Keys

log = logging.getLogger("tophosts.store")

# Tokens older than this are swept when an instance (re)connects.
_SWEEP_AGE = 600
# Share of the timeout one settle call may take: one that gets no reply in
# that time is asked again, on another connection, within the same timeout.
_SETTLE_SHARE = 0.5
# Most retired tokens an instance keeps to delete later (after a failed delete);
# any more are left to the sweep.
_RETIRED_MAX = 10_000


class Settler:
    def __init__(
        self,
        keys: Keys,
        failures: Failures,
        redis_clock: RedisClock,
        limits: Limits,
        link: Callable[[], Link],
    ) -> None:
        self._keys = keys
        self._failures = failures
        self._timeout = failures.timeout
        self._redis_clock = redis_clock
        self._limits = limits
        self._link = link
        self.tasks: set[asyncio.Task[None]] = set()
        # Tokens retired after a failed call, whose field is still to be deleted.
        self.retired: set[str] = set()

    def reset(self) -> None:
        self.tasks = set()

    def start(self, batch: list[Request], unsettled: Unsettled) -> None:
        """Settle ``batch`` in the background; its requests are answered from there."""
        task = asyncio.get_running_loop().create_task(self._settle(batch, unsettled))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def prepare(self, link: Link) -> None:
        """Before the first write on ``link``: read the Redis clock, and sweep the records
        of tokens nothing can settle on any more."""
        sent = time.monotonic()
        sec, usec = await self._failures.call(link.client.time())
        self._redis_clock.observe(sec, usec, sent, time.monotonic())
        sweep = link.sweep(keys=[self._keys.writes], args=[_SWEEP_AGE], client=link.client)
        await self._failures.call(sweep)

    async def _settle(self, batch: list[Request], unsettled: Unsettled) -> None:
        """Answer the requests of a call that got no reply, once Redis says whether it
        applied: as applied (each with its own outcome: a refusal, or for an
        idempotency key a replay, conflict or full store, as the call's record in the
        writes hash says), as refused (503), or, if Redis does not say within the
        timeout, as uncertain (504)."""
        link = self._link()
        # Past the call's deadline it can no longer start, and the settle
        # script can tell for good. Roughly then on this clock:
        start_by = unsettled.sent + self._timeout * START_SHARE
        # One timeout from then on (or from now, if later) for Redis to say.
        give_up = max(time.monotonic(), start_by) + self._timeout
        outcome: list[Outcome] | BaseException | None = None
        args: list[str | int] = [unsettled.token, unsettled.seq, unsettled.deadline]
        while outcome is None and (left := give_up - time.monotonic()) > 0:
            if (early := start_by - time.monotonic()) > 0:
                await asyncio.sleep(min(early, left))
                continue
            try:
                # At most a share of the time: a settle whose reply is lost or
                # late is asked again (on another connection), for the same answer.
                reply = await self._failures.call(
                    link.settle(keys=[self._keys.writes], args=args, client=link.client),
                    min(left, self._timeout * _SETTLE_SHARE),
                )
            except StoreUnavailable:
                await asyncio.sleep(min(0.05, max(0.0, give_up - time.monotonic())))
                continue
            if reply[0] == 0:  # the clocks disagree by a hair: the deadline is near
                await asyncio.sleep(0.005)
            elif reply[0] == 2:
                outcome = unsettled.cause
            elif unsettled.careful:
                packed = bytes(reply[1]).split(b":", 2)[2]
                outcome = refusals_of(batch, msgspec.msgpack.decode(packed), self._limits)
            else:
                outcome = [None] * len(batch)
        if outcome is None:
            log.warning("a write got no reply; its outcome is unknown: %s", unsettled.cause)
            outcome = WriteUncertain(
                f"{unsettled.cause}, and it could not be learned in time whether the events "
                "were applied: they may or may not have been counted"
            )
        else:
            log.warning(
                "a write got no reply; Redis says it was %s: %s",
                "not applied" if isinstance(outcome, BaseException) else "applied",
                unsettled.cause,
            )
        for i, request in enumerate(batch):
            if isinstance(outcome, BaseException):
                resolve(request.future, _copy(outcome))
            else:
                resolve(request.future, outcome[i])
        # Answered: now the token's field can go (it may hold the write's record).
        if len(self.retired) < _RETIRED_MAX:
            self.retired.add(unsettled.token)
        if not isinstance(outcome, WriteUncertain):
            await self.forget_retired(link)

    async def forget_retired(self, link: Link, also: list[str] | None = None) -> None:
        """Delete the fields of retired tokens (those whose calls are settled) and ``also``."""
        tokens = [*self.retired, *(also or ())]
        if tokens:
            with contextlib.suppress(StoreUnavailable):
                await self._failures.call(link.client.hdel(self._keys.writes, *tokens))
                self.retired.difference_update(tokens)


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per request: one raised in many tasks would chain their tracebacks."""
    return type(exc)(str(exc))
