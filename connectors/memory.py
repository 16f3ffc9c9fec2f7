"""An in-memory sink for tests, shipped beside the extension point (like structlog.testing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from bridge.domain.delivery import OutboxItem


class InMemorySink:
    """Keeps what it receives, deduplicated by entry id like a billing platform.

    ``fail`` is called with each batch before it is accepted; it may raise a delivery error to
    simulate an outage.
    """

    def __init__(
        self, name: str = "memory", fail: Callable[[Sequence[OutboxItem]], None] | None = None
    ) -> None:
        self.name = name
        self.fail = fail
        self.received: dict[str, OutboxItem] = {}
        self.deliveries = 0  # items received, duplicates included
        self._lock = threading.Lock()

    def deliver(self, items: Sequence[OutboxItem]) -> None:
        if self.fail is not None:
            self.fail(items)
        with self._lock:
            self.deliveries += len(items)
            for item in items:
                self.received.setdefault(item.entry.id, item)
