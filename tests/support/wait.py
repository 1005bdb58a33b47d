"""Wait for a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition"
) -> None:
    """Return once ``condition()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)
