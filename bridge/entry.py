"""The ``meterbridge`` command's entry point (and ``python -m bridge``'s), kept light on purpose.

Importing the CLI takes seconds on a busy machine (the web stack, SQLAlchemy, the connectors).
A long-running command installs its graceful SIGTERM handler only after that; a SIGTERM in
between (``docker stop`` or a rolling restart right after a start) would end the process with
the default action, -15 instead of the promised exit 0. So before importing anything heavy,
``serve``, ``worker`` and ``scheduler`` take SIGTERM as "stop before starting": a clean exit 0
(a migration in progress rolls back). Their own handlers replace this one once they run.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

LONG_RUNNING = frozenset({"serve", "worker", "scheduler"})


def _stop_before_starting(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in LONG_RUNNING and "--once" not in args:
        signal.signal(signal.SIGTERM, _stop_before_starting)
    from bridge.cli import main as cli

    cli()
