"""The fault suite's figures, summed up at the end of the run (for the operator's eye and the
closing note of issue 16)."""

from __future__ import annotations

import pytest

from tests.reliability.harness import RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault suite figures")
    for figures in RESULTS:
        terminalreporter.write_line(figures.line())
