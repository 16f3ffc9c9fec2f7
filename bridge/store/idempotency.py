"""Stored Idempotency-Key answers: every statement on their table.

Cursor-level (``bridge.store.sql``): a keyed usage change reads, claims and records its key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.store.sql import Sql, one, read_json

_GET = "SELECT fingerprint, result FROM idempotency_keys WHERE scope = :scope AND key = :key"
_CLAIM = """
INSERT INTO idempotency_keys (scope, key, fingerprint, result, created)
VALUES (:scope, :key, :fingerprint, '{}', :now)
"""
_RECORD = "UPDATE idempotency_keys SET result = :result::JSON WHERE scope = :scope AND key = :key"
# The oldest first, through ix_idempotency_keys_created.
_PURGE = """
DELETE FROM idempotency_keys WHERE (scope, key) IN (
    SELECT scope, key FROM idempotency_keys WHERE created < :before ORDER BY created LIMIT :limit)
"""


class IdempotencyStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.get = sql.style(_GET)
        self.claim = sql.style(_CLAIM)
        self.record = sql.style(_RECORD)
        self.purge = sql.style(_PURGE)


class SqlIdempotency:
    def __init__(self, st: IdempotencyStatements, cursor: Any) -> None:
        self._st, self._cursor = st, cursor

    def get(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        self._cursor.execute(self._st.get, {"scope": scope, "key": key})
        row = one(self._cursor, ("fingerprint", "result"))
        return None if row is None else (row["fingerprint"], read_json(row["result"]))

    def claim(self, scope: str, key: str, fingerprint: str, now: datetime) -> None:
        params = {
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "now": self._st.sql.ts(now),
        }
        self._cursor.execute(self._st.claim, params)

    def record(self, scope: str, key: str, result: dict[str, Any]) -> None:
        params = {"scope": scope, "key": key, "result": self._st.sql.json(result)}
        self._cursor.execute(self._st.record, params)

    def purge(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` keys stored before ``before``, oldest first; how many."""
        self._cursor.execute(self._st.purge, {"before": self._st.sql.ts(before), "limit": limit})
        return int(self._cursor.rowcount)
