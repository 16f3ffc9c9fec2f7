"""``meterbridge serve|worker|scheduler`` stop with exit 0 on a SIGTERM that arrives while they
are still starting (importing, migrating), not only once they run (``bridge/entry.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bridge.cli
from bridge import entry

STATUS = Path("/proc/self/status")


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not STATUS.exists(), reason="needs Linux's /proc to see the handler")
def test_a_worker_stopped_while_it_starts_exits_0(tmp_path: Path) -> None:
    """SIGTERM as soon as the process catches it, long before the CLI is imported and the
    worker's own handler installed (no fixed sleep: /proc says when)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'bridge.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "worker"], env=env)
    deadline = time.monotonic() + 30
    while not _catches_sigterm(proc.pid):
        assert proc.poll() is None
        assert time.monotonic() < deadline, "the handler was never installed"
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("argv", "early"),
    [
        (["serve"], True),
        (["worker"], True),
        (["scheduler"], True),
        (["worker", "--once"], False),  # a one-off run: SIGTERM ends it as usual
        (["outbox", "status"], False),
    ],
)
def test_only_long_running_commands_take_an_early_sigterm(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], early: bool
) -> None:
    seen: dict[str, Any] = {}

    previous = signal.getsignal(signal.SIGTERM)

    def cli() -> None:
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        if seen["handler"] is not previous:  # (never SIGTERM the test run itself)
            os.kill(os.getpid(), signal.SIGTERM)  # while "starting": handled as exit 0
            time.sleep(5)

    monkeypatch.setattr(sys, "argv", ["meterbridge", *argv])
    monkeypatch.setattr(bridge.cli, "main", cli)
    try:
        if early:
            with pytest.raises(SystemExit) as stopped:
                entry.main()
            assert stopped.value.code == 0
        else:
            entry.main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (seen["handler"] is not previous) == early
