"""Periodic background work beside the server: the metrics flusher, the snapshot writer."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def every(
    interval: float, job: Callable[[], Awaitable[None] | None], final: bool = True
) -> AsyncIterator[None]:
    """Run ``job()`` every ``interval`` seconds while the body runs, and once more at the
    end when ``final``.

    ``job`` is a plain function or a coroutine function; it handles its own
    errors. The background task is cancelled, and awaited, however the body exits.
    """

    async def run() -> None:
        result = job()
        if inspect.isawaitable(result):
            await result

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await run()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if final:
            await run()
