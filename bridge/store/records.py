"""The offline usage records: every statement on ``usage_records``, and its one row mapper.

Cursor-level (``bridge.store.sql``), like the ledger it sits beside: a check-in writes one row
per accepted record. The primary key is the client's record id, so a record can be accepted
once ever; a concurrent insert of the same id fails on it (``StoreConflict`` on PostgreSQL,
where the check-in runs again and finds the record).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.domain.checkin import StoredRecord
from bridge.store.sql import Sql, one, read_ts

COLUMNS = (
    "id",
    "license_id",
    "increment",
    "occurred_at",
    "entry_id",
    "period_start",
    "late",
    "received_at",
)
_INSERT = f"""
INSERT INTO usage_records ({", ".join(COLUMNS)}) VALUES ({", ".join(f":{c}" for c in COLUMNS)})
"""  # noqa: S608 - only module constants are interpolated
_GET = f"SELECT {', '.join(COLUMNS)} FROM usage_records WHERE id = :id"  # noqa: S608


def record_from_row(row: Any) -> StoredRecord:
    return StoredRecord(
        id=row["id"],
        license_id=row["license_id"],
        increment=int(row["increment"]),
        occurred_at=read_ts(row["occurred_at"]),
        entry_id=row["entry_id"],
        period_start=read_ts(row["period_start"]),
        late=bool(row["late"]),
    )


class RecordStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.insert = sql.style(_INSERT)
        self.get = sql.style(_GET)


class SqlRecords:
    """``bridge.domain.ports.UsageRecords`` on a unit of work's cursor."""

    def __init__(self, st: RecordStatements, cursor: Any) -> None:
        self._st, self._cursor = st, cursor

    def get(self, record_id: str) -> StoredRecord | None:
        self._cursor.execute(self._st.get, {"id": record_id})
        row = one(self._cursor, COLUMNS)
        return None if row is None else record_from_row(row)

    def add(self, record: StoredRecord, received_at: datetime) -> None:
        ts = self._st.sql.ts
        self._cursor.execute(
            self._st.insert,
            {
                "id": record.id,
                "license_id": record.license_id,
                "increment": record.increment,
                "occurred_at": ts(record.occurred_at),
                "entry_id": record.entry_id,
                "period_start": ts(record.period_start),
                "late": record.late,
                "received_at": ts(received_at),
            },
        )
