"""Where the tests that need several OS processes at once get them.

Forked from a server that imported the bridge once (Python's ``forkserver``), each process
starts in a fraction of the seconds a fresh interpreter takes to import it on a busy machine,
yet shares nothing with the test process: it builds its own settings, engines and services.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import ForkServerContext

# The server is started once per test session; what it imports, every process has at start.
PRELOAD = ["bridge.bootstrap", "bridge.settings"]


def warm_context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx
