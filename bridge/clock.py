"""The system clock; tests inject ``bridge.testing.FakeClock`` instead."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
