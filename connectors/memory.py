"""An in-memory sink for tests, shipped beside the extension point (like structlog.testing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from bridge.domain.delivery import ItemFailure, LicenseFacts, OutboxItem, forwarded
from bridge.domain.model import UsageEntry


class InMemorySink:
    """Keeps what it receives, deduplicated by entry id like a billing platform.

    ``fail`` is called with each batch before it is accepted; it may raise a delivery error to
    simulate an outage, or return the failures of some items (those are not accepted).
    """

    def __init__(
        self,
        name: str = "memory",
        fail: Callable[[Sequence[OutboxItem]], Sequence[ItemFailure] | None] | None = None,
    ) -> None:
        self.name = name
        self.fail = fail
        self.received: dict[str, OutboxItem] = {}
        self.deliveries = 0  # items received, duplicates included
        self._lock = threading.Lock()

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool:
        return forwarded(entry)

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        failures = list((self.fail(items) if self.fail is not None else None) or ())
        failed = {f.item_id for f in failures}
        with self._lock:
            for item in items:
                if item.id not in failed:
                    self.deliveries += 1
                    self.received.setdefault(item.entry.id, item)
        return failures
