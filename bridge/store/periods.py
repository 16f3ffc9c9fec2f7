"""Writing usage-period rollovers on the DBAPI cursor: the usage hot path closes one license's
period lazily, the scheduler closes thousands of idle ones a batch; both write the same rows.

Closing a period writes its record (the ledger totals are summed by the INSERT itself), a
``period_reset`` ledger entry timestamped at the period's end, and the license's new period,
guarded by the old one: a second close of the same period fails on the unique key
``(license_id, period_start)`` or on that guard, whoever tries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.domain.model import License, UsageEntry, UsageKind
from bridge.domain.periods import Rollover
from bridge.domain.ports import StoreConflict
from bridge.store.hotpath import FIND_COLUMNS, HotPath

# The ids of period_reset entries derive from (license, period start): the same close always
# has the same entry, so a retried or concurrent close can never write a second one.
_RESET_IDS = uuid.UUID("5b0c2f8e-4a8e-4d57-9a57-2f4a51c0d0a1")
PERIOD_ACTOR = "period"

_CLOSE = """
INSERT INTO usage_periods (license_id, period_start, period_end, uses_at_open, uses_at_close,
                           increments, decrements, resets, entries, reset_entry_id, closed_by,
                           closed_at)
SELECT :license_id, :start, :end, :uses_at_open, :uses_at_close,
       COALESCE(SUM(CASE WHEN kind = 'increment' THEN delta ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN kind = 'decrement' THEN -delta ELSE 0 END), 0),
       COUNT(CASE WHEN kind = 'reset' THEN 1 END),
       COUNT(*), :reset_entry_id, :closed_by, :closed_at
FROM usage_ledger
WHERE license_id = :of_license AND occurred_at >= :from_ts AND occurred_at < :to_ts
  AND kind <> 'period_reset'
"""  # each value once per name: PostgreSQL types a reused parameter by both of its uses

_MOVE = """
UPDATE licenses SET uses = :uses, period_start = :start, period_end = :end,
                    period_open_uses = :open_uses
WHERE id = :id AND uses = :old_uses AND {guard}
"""
_MOVE_CLOSED = _MOVE.format(guard="period_end = :old_end")
_MOVE_OPENED = _MOVE.format(guard="period_end IS NULL")

_DUE = f"""
SELECT {FIND_COLUMNS}
FROM licenses l JOIN policies p ON p.id = l.policy_id
WHERE l.period_end <= :now
ORDER BY l.period_end, l.id
LIMIT :limit
"""  # noqa: S608 - only module constants are interpolated

_UNOPENED = f"""
SELECT {FIND_COLUMNS}
FROM licenses l JOIN policies p ON p.id = l.policy_id
WHERE l.policy_id = :policy_id AND l.period_end IS NULL
"""  # noqa: S608 - only module constants are interpolated


def reset_entry_id(license_id: str, start: datetime) -> str:
    return str(uuid.uuid5(_RESET_IDS, f"{license_id}/{start.isoformat()}"))


@dataclass(frozen=True, slots=True)
class PeriodSql:
    hot: HotPath

    def apply(
        self,
        cursor: Any,
        rollovers: Sequence[tuple[License, Rollover]],
        now: datetime,
        closed_by: str,
    ) -> None:
        """Write the rollovers of several licenses; ``StoreConflict`` if any was done already."""
        ts = self.hot.ts
        entries: list[UsageEntry] = []
        records: list[dict[str, Any]] = []
        closed_moves: list[dict[str, Any]] = []
        opened_moves: list[dict[str, Any]] = []
        for license, rollover in rollovers:
            for period in rollover.closed:
                entry = UsageEntry(
                    id=reset_entry_id(license.id, period.start),
                    license_id=license.id,
                    kind=UsageKind.PERIOD_RESET,
                    delta=-period.uses_at_close,
                    uses_before=period.uses_at_close,
                    uses_after=0,
                    actor=PERIOD_ACTOR,
                    idempotency_key=None,
                    request_id=None,
                    occurred_at=period.end,
                )
                entries.append(entry)
                start, end = ts(period.start), ts(period.end)
                records.append(
                    {
                        "license_id": license.id,
                        "of_license": license.id,
                        "start": start,
                        "from_ts": start,
                        "end": end,
                        "to_ts": end,
                        "uses_at_open": period.uses_at_open,
                        "uses_at_close": period.uses_at_close,
                        "reset_entry_id": entry.id,
                        "closed_by": closed_by,
                        "closed_at": ts(now),
                    }
                )
            move = {
                "id": license.id,
                "uses": rollover.uses,
                "old_uses": license.uses,
                "start": ts(rollover.start) if rollover.start else None,
                "end": ts(rollover.end) if rollover.end else None,
                "open_uses": rollover.open_uses,
            }
            if license.period_end is None:
                opened_moves.append(move)
            else:
                closed_moves.append({**move, "old_end": ts(license.period_end)})
        # The guarded moves first: they lock the license rows, so a concurrent closer of the
        # same license waits here (then finds its guard false) instead of deadlocking on the
        # unique period key.
        for sql, moves in ((_MOVE_CLOSED, closed_moves), (_MOVE_OPENED, opened_moves)):
            if moves:
                cursor.executemany(self.hot.style(sql), moves)
                if cursor.rowcount != len(moves):
                    raise StoreConflict("a usage period moved under this rollover")
        if records:
            self.hot.add_entries(cursor, entries)
            cursor.executemany(self.hot.style(_CLOSE), records)

    def due(self, cursor: Any, now: datetime, limit: int) -> list[License]:
        """Licenses whose period ended by ``now``, the longest-ended first."""
        sql = self.hot.style(_DUE)
        if not self.hot.sqlite:
            sql += " FOR UPDATE OF l SKIP LOCKED"
        cursor.execute(sql, {"now": self.hot.ts(now), "limit": limit})
        return [self.hot.license_from_row(row) for row in cursor.fetchall()]

    def unopened(self, cursor: Any, policy_id: str) -> list[License]:
        cursor.execute(self.hot.style(_UNOPENED), {"policy_id": policy_id})
        return [self.hot.license_from_row(row) for row in cursor.fetchall()]


class CursorPeriods:
    """``bridge.domain.ports.PeriodWriter`` on a unit of work's cursor."""

    def __init__(self, sql: PeriodSql, cursor: Any) -> None:
        self._sql, self._cursor = sql, cursor

    def roll(
        self, rollovers: Sequence[tuple[License, Rollover]], now: datetime, closed_by: str
    ) -> None:
        self._sql.apply(self._cursor, rollovers, now, closed_by)

    def due(self, now: datetime, limit: int) -> list[License]:
        return self._sql.due(self._cursor, now, limit)

    def unopened(self, policy_id: str) -> list[License]:
        return self._sql.unopened(self._cursor, policy_id)
