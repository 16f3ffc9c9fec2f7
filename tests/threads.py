"""Running test writers in threads with a deadline instead of sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_in_threads(count: int, target: Callable[[int], None], deadline_s: float) -> None:
    """Run ``target(i)`` in ``count`` threads and wait for all of them, failing the test if
    any is still running after ``deadline_s`` (a hang fails instead of blocking the run)."""
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "writers did not finish before the deadline"
