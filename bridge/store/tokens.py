"""Bearer tokens: every statement on their table (only a SHA-256 digest of a secret is kept).

Cursor-level (``bridge.store.sql``): every authenticated request looks its token up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.store.sql import Sql, one

_ADD = """
INSERT INTO tokens (id, digest, role, bearer_id, created)
VALUES (:id, :digest, :role, :bearer_id, :created)
"""
_FIND = "SELECT role, bearer_id FROM tokens WHERE digest = :digest"
_ANY_ADMIN = "SELECT 1 AS found FROM tokens WHERE role = 'admin' LIMIT 1"
_DELETE_FOR = "DELETE FROM tokens WHERE bearer_id = :bearer_id"


class TokenStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.add = sql.style(_ADD)
        self.find = sql.style(_FIND)
        self.any_admin = sql.style(_ANY_ADMIN)
        self.delete_for = sql.style(_DELETE_FOR)


class SqlTokens:
    def __init__(self, st: TokenStatements, cursor: Any) -> None:
        self._st, self._cursor = st, cursor

    def add(self, token_id: str, digest: str, role: str, bearer_id: str, now: datetime) -> None:
        params = {
            "id": token_id,
            "digest": digest,
            "role": role,
            "bearer_id": bearer_id,
            "created": self._st.sql.ts(now),
        }
        self._cursor.execute(self._st.add, params)

    def find(self, digest: str) -> tuple[str, str] | None:
        """(role, bearer id) of the token with this digest."""
        self._cursor.execute(self._st.find, {"digest": digest})
        row = one(self._cursor, ("role", "bearer_id"))
        return None if row is None else (row["role"], row["bearer_id"])

    def any_admin(self) -> bool:
        self._cursor.execute(self._st.any_admin)
        return one(self._cursor, ("found",)) is not None

    def delete_for(self, bearer_id: str) -> None:
        self._cursor.execute(self._st.delete_for, {"bearer_id": bearer_id})
