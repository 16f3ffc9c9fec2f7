"""A stop that arrives while a long-running command is still starting.

``serve``, ``worker`` and ``scheduler`` install their SIGTERM/SIGINT handlers once they are
wired; loading the modules and migrating take seconds on a busy machine, and a SIGTERM in that
window used to end the process with -15 (an orchestrator stopping a replica that was just
started, a test harness). Imported first by ``bridge.cli``: for those three commands a SIGTERM
before their own handler ends the process with exit 0, unwinding what is open (a migration's
transaction rolls back). Nothing is held yet: no request was accepted, no batch claimed. The
other commands keep Python's default, so a stopped one-shot command does not report success.
"""

from __future__ import annotations

import signal
import sys

LONG_RUNNING = frozenset({"serve", "worker", "scheduler"})


def _command(argv: list[str]) -> str | None:
    """The command name: the first argument that is not an option."""
    return next((arg for arg in argv[1:] if not arg.startswith("-")), None)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


if _command(sys.argv) in LONG_RUNNING:
    signal.signal(signal.SIGTERM, _exit_cleanly)
