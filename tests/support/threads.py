"""Run a function in several threads at once, and wait for all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_threads(target: Callable[[int], None], count: int) -> None:
    """Call ``target(0)`` ... ``target(count - 1)``, each in a thread of its own."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
