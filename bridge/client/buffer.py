"""The client's local buffer: one SQLite file that every use is written to before it is sent.

Crash-safe by construction: WAL with ``synchronous=FULL``, so a record is on disk when
``record`` returns; each record carries the id the bridge deduplicates on, so sending it again
after a crash (the answer lost, or never marked) is answered ``duplicate`` and counted once.
Only the standard library: the client must import without the server's dependencies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        increment INTEGER NOT NULL,
        occurred_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        code TEXT, detail TEXT, entry_id TEXT, period_start TEXT,
        late INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS records_pending ON records (status, seq)",
    "CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_COLUMNS = "id, increment, occurred_at, status, code, detail, entry_id, period_start, late"


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded use and what became of it: ``pending`` until the bridge answers, then its
    answer (``accepted``, ``duplicate``: accepted earlier, or ``rejected`` with ``code`` and
    ``detail``)."""

    id: str
    increment: int
    occurred_at: str
    status: str = "pending"
    code: str | None = None
    detail: str | None = None
    entry_id: str | None = None
    period_start: str | None = None
    late: bool = False

    @property
    def counted(self) -> bool:
        """Whether the bridge has counted this use (now or on an earlier attempt)."""
        return self.status in ("accepted", "duplicate")


def _record(row: Sequence[Any]) -> Record:
    record_id, increment, occurred_at, status, code, detail, entry_id, start, late = row
    return Record(
        record_id, increment, occurred_at, status, code, detail, entry_id, start, bool(late)
    )


class Buffer:
    """The records and the last license state the bridge sent, in one SQLite file. Safe to
    share between threads (one lock) and between processes (SQLite's write lock)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record(self, increment: int, occurred_at: datetime) -> Record:
        """Write one use, with a new id, durably (the commit is fsynced)."""
        rec = Record(str(uuid.uuid4()), increment, occurred_at.isoformat())
        with self._write() as db:
            db.execute(
                "INSERT INTO records (id, increment, occurred_at) VALUES (?, ?, ?)",
                (rec.id, rec.increment, rec.occurred_at),
            )
        return rec

    def pending(self, limit: int) -> list[Record]:
        """The oldest records the bridge has not answered, in the order they were recorded."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE status = 'pending' ORDER BY seq LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        return [_record(r) for r in rows]

    def settle(self, results: Sequence[dict[str, Any]], license: dict[str, Any] | None) -> None:
        """Store the bridge's per-record answers (and the license it sent) in one transaction."""
        with self._write() as db:
            for r in results:
                db.execute(
                    "UPDATE records SET status = ?, code = ?, detail = ?, entry_id = ?, "
                    "period_start = ?, late = ? WHERE id = ? AND status = 'pending'",
                    (
                        r["status"],
                        r.get("code"),
                        r.get("detail"),
                        r.get("entryId"),
                        r.get("periodStart"),
                        int(bool(r.get("late"))),
                        r["id"],
                    ),
                )
            if license is not None:
                db.execute(
                    "INSERT INTO state (name, value) VALUES ('license', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (json.dumps(license),),
                )

    def pending_count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM records WHERE status = 'pending'")
            return int(row.fetchone()[0])

    def get(self, record_id: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE id = ?",  # noqa: S608
                (record_id,),
            ).fetchone()
        return None if row is None else _record(row)

    def all(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM records ORDER BY seq").fetchall()  # noqa: S608
        return [_record(r) for r in rows]

    def license(self) -> dict[str, Any] | None:
        """The license's attributes as of the last answer (``uses``, ``maxUses``, ...)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = 'license'").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()
