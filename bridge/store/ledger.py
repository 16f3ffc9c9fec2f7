"""The usage ledger: the one insert of an entry, its reads, and the one row mapper.

Cursor-level (``bridge.store.sql``): every usage change writes an entry. Period closes write
their ``period_reset`` entries set-based with the rest of a rollover (``bridge.store.periods``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.domain.model import USES_KINDS, UsageEntry, UsageKind
from bridge.store.sql import Sql, every, read_ts, total

# The entry's columns (``seq`` is the database's); the one list the insert and the reads use.
COLUMNS = (
    "id",
    "license_id",
    "kind",
    "delta",
    "uses_before",
    "uses_after",
    "actor",
    "idempotency_key",
    "request_id",
    "occurred_at",
    "machine_id",
)
# ``e.`` columns for a SELECT that joins the ledger as ``e`` (outbox claims, dead letters).
_SELECTED = ("seq", *COLUMNS)  # the order ``entry_from_values`` reads
SELECT_COLUMNS = ", ".join(f"e.{c}" for c in _SELECTED)
_INSERT = f"""
INSERT INTO usage_ledger ({", ".join(COLUMNS)}) VALUES ({", ".join(f":{c}" for c in COLUMNS)})
"""  # noqa: S608 - only module constants are interpolated
_HISTORY = f"""
SELECT {SELECT_COLUMNS} FROM usage_ledger e WHERE e.license_id = :license_id
ORDER BY e.seq DESC LIMIT :limit OFFSET :offset
"""  # noqa: S608 - only module constants are interpolated
_COUNT = "SELECT COUNT(*) AS total FROM usage_ledger WHERE license_id = :license_id"
_USES_KINDS = ", ".join(f"'{k.value}'" for k in USES_KINDS)
_TOTAL = f"""
SELECT COALESCE(SUM(delta), 0) AS total FROM usage_ledger
WHERE license_id = :license_id AND kind IN ({_USES_KINDS})
"""  # noqa: S608 - only module constants are interpolated
_KINDS = {kind.value: kind for kind in UsageKind}


def entry_from_row(row: Any) -> UsageEntry:
    """An entry from a row holding the ledger's columns by name (either access style)."""
    return entry_from_values([row[column] for column in _SELECTED])


def entry_from_values(values: Sequence[Any]) -> UsageEntry:
    """An entry from the values of ``SELECT_COLUMNS``, in that order (``seq`` first): the
    relay's claim maps its rows by position, without a dict per row."""
    (seq, id, license_id, kind, delta, before, after, actor, key, request, at, machine) = values
    return UsageEntry(
        id,
        license_id,
        _KINDS[kind],
        delta,
        before,
        after,
        actor,
        key,
        request,
        read_ts(at),
        seq,
        machine,
    )


class LedgerStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.insert = sql.style(_INSERT)
        self.history = sql.style(_HISTORY)
        self.count = sql.style(_COUNT)
        self.total = sql.style(_TOTAL)


class SqlLedger:
    def __init__(self, st: LedgerStatements, cursor: Any) -> None:
        self._st, self._cursor = st, cursor

    def add(self, entry: UsageEntry) -> None:
        self._cursor.execute(
            self._st.insert,
            {
                "id": entry.id,
                "license_id": entry.license_id,
                "kind": entry.kind.value,
                "delta": entry.delta,
                "uses_before": entry.uses_before,
                "uses_after": entry.uses_after,
                "actor": entry.actor,
                "idempotency_key": entry.idempotency_key,
                "request_id": entry.request_id,
                "occurred_at": self._st.sql.ts(entry.occurred_at),
                "machine_id": entry.machine_id,
            },
        )

    def history(self, license_id: str, *, offset: int, limit: int) -> tuple[list[UsageEntry], int]:
        params = {"license_id": license_id, "offset": offset, "limit": limit}
        self._cursor.execute(self._st.history, params)
        items = [entry_from_row(r) for r in every(self._cursor)]
        self._cursor.execute(self._st.count, {"license_id": license_id})
        return items, total(self._cursor)

    def total(self, license_id: str) -> int:
        """The sum of the license's usage deltas (machine entries count cores, not uses)."""
        self._cursor.execute(self._st.total, {"license_id": license_id})
        return total(self._cursor)
