"""Appends one JSON object per usage change to a file: the embedded default sink.

Delivery is at least once: after a crash between writing and recording the delivery, a batch can
be appended again. Readers deduplicate on ``id`` (the ledger entry id), as the billing platforms
do.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from pydantic import BaseModel, Field

from bridge.domain.delivery import (
    ItemFailure,
    LicenseFacts,
    OutboxItem,
    Reason,
    TransientDeliveryError,
    forwarded,
)
from bridge.domain.model import UsageEntry


class FileSinkSettings(BaseModel):
    enabled: bool = Field(True, description="Forward usage changes to a local NDJSON file")
    path: Path = Field(Path("./meterbridge-usage.ndjson"), description="The file appended to")


def record(item: OutboxItem) -> dict[str, object]:
    """The line written for one item (a pure mapping, tested on its own). A machine entry
    carries the license's core total before and after, and the machine's id."""
    e = item.entry
    counted = "cores" if e.kind.counts_cores else "uses"
    line: dict[str, object] = {
        "id": e.id,
        "license_id": e.license_id,
        "kind": e.kind.value,
        "delta": e.delta,
        f"{counted}_before": e.uses_before,
        f"{counted}_after": e.uses_after,
        "actor": e.actor,
        "occurred_at": e.occurred_at.isoformat(),
    }
    if e.machine_id is not None:
        line["machine_id"] = e.machine_id
    return line


class FileSink:
    def __init__(self, path: Path, name: str = "file") -> None:
        self.name = name
        self.path = path

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool:
        """Every forwarded change: the file keeps them all."""
        return forwarded(entry)

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        lines = "".join(json.dumps(record(i), separators=(",", ":")) + "\n" for i in items)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _append_whole(self.path, lines.encode())
        except OSError as exc:  # disk full, permissions: may heal, so retry
            message = f"cannot append to {self.path}: {exc}"
            raise TransientDeliveryError(message, reason=Reason.UNAVAILABLE) from exc
        return ()


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync it, or leave the file as it was: a write cut short (a full disk)
    is truncated away, so no torn line stays for the retry to append after. The exclusive lock
    keeps several relays appending to one file from truncating each other's lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)
                os.fsync(fd)
            raise
    finally:
        os.close(fd)  # releases the lock
