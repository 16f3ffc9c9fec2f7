"""Bearer tokens: every statement on their table (only a SHA-256 digest of a secret is kept).

Cursor-level (``bridge.store.sql``): every authenticated request looks its token up.

Removing tokens bumps ``auth_generation`` in the same transaction: an API process that caches
principals re-reads that counter (``generation``) and drops its cache when it moved.
"""

from __future__ import annotations

from collections.abc import Callable
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
_GENERATION = "SELECT generation FROM auth_generation WHERE id = 1"
# An upsert: the row comes with the migration, but a table emptied by hand must not stop counting
# (it restarts from 1: a process that saw more drops its cache on the TTL, not on the counter).
_BUMP = """
INSERT INTO auth_generation (id, generation) VALUES (1, 1)
ON CONFLICT (id) DO UPDATE SET generation = auth_generation.generation + 1
"""


class TokenStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.add = sql.style(_ADD)
        self.find = sql.style(_FIND)
        self.any_admin = sql.style(_ANY_ADMIN)
        self.delete_for = sql.style(_DELETE_FOR)
        self.generation = sql.style(_GENERATION)
        self.bump = sql.style(_BUMP)


class SqlTokens:
    def __init__(
        self, st: TokenStatements, cursor: Any, revoked: Callable[[], None] = lambda: None
    ) -> None:
        self._st, self._cursor, self._revoked = st, cursor, revoked

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
        self.revoke()

    def revoke(self) -> None:
        """Bump the revocation counter in this transaction; on commit, this process's
        principal caches are dropped at once (the unit of work's ``revoked`` callback)."""
        self._cursor.execute(self._st.bump)
        self._revoked()

    def generation(self) -> int:
        """The revocation counter (0 when the row is missing: a database not yet migrated)."""
        self._cursor.execute(self._st.generation)
        row = one(self._cursor, ("generation",))
        return 0 if row is None else int(row["generation"])
