"""Job locks: one replica at a time runs a scheduled job.

On PostgreSQL this is a session advisory lock, so replicas of the scheduler against one
database skip a run another replica is doing (the unique period key would stop a double close
anyway; the lock saves the wasted work). The server drops the lock with a dead session. On
SQLite one scheduler runs per database file; the lock here only keeps one process from running
a job twice at once against the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Lock

from sqlalchemy import Engine, text

_local: dict[tuple[str, str], Lock] = {}
_local_guard = Lock()


def advisory_key(name: str) -> int:
    """The PostgreSQL advisory lock key of the lock named ``name``."""
    return int.from_bytes(
        hashlib.sha256(f"meterbridge:{name}".encode()).digest()[:8], "big", signed=True
    )


class JobLocks:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        """Yields whether this caller holds the lock named ``name`` (it never waits)."""
        if self._engine.dialect.name != "postgresql":
            with _local_guard:
                lock = _local.setdefault((str(self._engine.url), name), Lock())
            acquired = lock.acquire(blocking=False)
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
            return
        key = advisory_key(name)
        with self._engine.connect() as conn:
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()  # the lock is the session's, not the transaction's
            try:
                yield held
            finally:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
