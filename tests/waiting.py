"""Waiting in tests: poll a condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE_S = 60.0  # generous: a hang fails the test instead of blocking the run


def wait_for(
    condition: Callable[[], object],
    what: str = "the condition",
    deadline_s: float = DEADLINE_S,
    every_s: float = 0.05,
) -> None:
    """Poll ``condition`` every ``every_s`` until it is true; fail naming ``what`` after
    ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)
