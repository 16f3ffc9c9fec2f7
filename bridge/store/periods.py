"""Usage-period rollovers, cursor-level (``bridge.store.sql``): the usage hot path rolls one
license over lazily, the scheduler thousands of due ones a batch; both write the same rows. The
words are those of ``bridge.domain.periods``.

Closing a period writes its record (the ledger totals are summed by the INSERT itself), a
``period_reset`` ledger entry timestamped at the period's end, and the license's period columns
(the next period opened), guarded by the old values: a second close of the same period fails on
the unique key ``(license_id, period_start)`` or on that guard, whoever tries. These are the
only statements outside ``bridge.store.licenses`` and ``bridge.store.ledger`` on their tables: a
rollover is one set of set-based writes to the license's period columns, its reset entries and
the period records, together, for one license or thousands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.domain.periods import ClosedPeriod, PeriodState, Rollover, rule_from_json
from bridge.domain.ports import StoreConflict
from bridge.store.sql import Sql, every, one, read_ts

PERIOD_ACTOR = "period"

# SQLite: a batch's rows go to two temporary tables (no indexes, cheap to fill), then each write
# is one set-based statement over them, as PostgreSQL's are over arrays.
_SQ_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS rollover_licenses (id TEXT PRIMARY KEY, uses INTEGER, "
    "old_uses INTEGER, start_at TEXT, end_at TEXT, open_uses INTEGER, old_end TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS rollover_closed (license_id TEXT, start_at TEXT, "
    "end_at TEXT, uses_at_open INTEGER, uses_at_close INTEGER, reset_entry_id TEXT)",
    "DELETE FROM temp.rollover_licenses",
    "DELETE FROM temp.rollover_closed",
)
_SQ_FILL_LICENSES = """
INSERT INTO temp.rollover_licenses
VALUES (:id, :uses, :old_uses, :start, :end, :open_uses, :old_end)
"""
_SQ_FILL_CLOSED = """
INSERT INTO temp.rollover_closed
VALUES (:license_id, :start, :end, :uses_at_open, :uses_at_close, :reset_entry_id)
"""
_SQ_DROP_STALE = """
DELETE FROM temp.rollover_licenses WHERE NOT EXISTS (
    SELECT 1 FROM licenses l WHERE l.id = rollover_licenses.id
                                 AND l.uses = rollover_licenses.old_uses
                                 AND l.period_end IS rollover_licenses.old_end)
"""
_SQ_DROP_STALE_CLOSED = """
DELETE FROM temp.rollover_closed WHERE license_id NOT IN (SELECT id FROM temp.rollover_licenses)
"""
_SQ_UPDATE_LICENSES = """
UPDATE licenses SET uses = m.uses, period_start = m.start_at, period_end = m.end_at,
                    period_open_uses = m.open_uses
FROM temp.rollover_licenses AS m WHERE licenses.id = m.id
"""
_SQ_LEDGER = f"""
INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor,
                          occurred_at)
SELECT reset_entry_id, license_id, 'period_reset', -uses_at_close, uses_at_close, 0,
       '{PERIOD_ACTOR}', end_at
FROM temp.rollover_closed
"""  # noqa: S608 - only module constants are interpolated
_SQ_CLOSE = """
INSERT INTO usage_periods (license_id, period_start, period_end, uses_at_open, uses_at_close,
                           increments, decrements, resets, entries, reset_entry_id, closed_by,
                           closed_at)
SELECT r.license_id, r.start_at, r.end_at, r.uses_at_open, r.uses_at_close,
       COALESCE(SUM(CASE WHEN e.kind = 'increment' THEN e.delta ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN e.kind = 'decrement' THEN -e.delta ELSE 0 END), 0),
       COUNT(CASE WHEN e.kind = 'reset' THEN 1 END),
       COUNT(e.id), r.reset_entry_id, :closed_by, :closed_at
FROM temp.rollover_closed AS r
LEFT JOIN usage_ledger AS e ON e.license_id = r.license_id AND e.occurred_at >= r.start_at
     AND e.occurred_at < r.end_at AND e.kind <> 'period_reset'
GROUP BY r.rowid
"""

# PostgreSQL: each write of a batch is one statement over arrays (``unnest``), one round trip
# for thousands of licenses; ``executemany`` sends a statement per row (~4x slower here). The
# arrays travel in binary (``%(name)b``): the text form quotes every string with a regex.
_PG_UPDATE_LICENSES = """
UPDATE licenses AS l SET uses = v.uses, period_start = v.start_at, period_end = v.end_at,
                         period_open_uses = v.open_uses
FROM unnest(%(id)b::varchar[], %(uses)b::bigint[], %(old_uses)b::bigint[],
            %(start)b::timestamptz[], %(end)b::timestamptz[], %(open_uses)b::bigint[],
            %(old_end)b::timestamptz[])
     AS v(id, uses, old_uses, start_at, end_at, open_uses, old_end)
WHERE l.id = v.id AND l.uses = v.old_uses AND {guard}
RETURNING l.id
"""
# A license that closes a period, and one that opens its first (it has none to close).
_PG_UPDATE_CLOSING = _PG_UPDATE_LICENSES.format(guard="l.period_end = v.old_end")
_PG_UPDATE_FIRST = _PG_UPDATE_LICENSES.format(guard="l.period_end IS NULL")
_PG_LEDGER = f"""
INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor,
                          occurred_at)
SELECT v.reset_entry_id, v.license_id, 'period_reset', -v.uses_at_close, v.uses_at_close, 0,
       '{PERIOD_ACTOR}', v.end_at
FROM unnest(%(license_id)b::varchar[], %(end)b::timestamptz[], %(uses_at_close)b::bigint[],
            %(reset_entry_id)b::varchar[]) AS v(license_id, end_at, uses_at_close, reset_entry_id)
"""  # noqa: S608 - only module constants are interpolated
_PG_CLOSE = """
INSERT INTO usage_periods (license_id, period_start, period_end, uses_at_open, uses_at_close,
                           increments, decrements, resets, entries, reset_entry_id, closed_by,
                           closed_at)
SELECT v.license_id, v.start_at, v.end_at, v.uses_at_open, v.uses_at_close,
       COALESCE(SUM(CASE WHEN e.kind = 'increment' THEN e.delta ELSE 0 END), 0),
       COALESCE(SUM(CASE WHEN e.kind = 'decrement' THEN -e.delta ELSE 0 END), 0),
       COUNT(CASE WHEN e.kind = 'reset' THEN 1 END),
       COUNT(e.id), v.reset_entry_id, CAST(%(closed_by)b AS VARCHAR),
       CAST(%(closed_at)b AS TIMESTAMPTZ)
FROM unnest(%(license_id)b::varchar[], %(start)b::timestamptz[], %(end)b::timestamptz[],
            %(uses_at_open)b::bigint[], %(uses_at_close)b::bigint[],
            %(reset_entry_id)b::varchar[])
     AS v(license_id, start_at, end_at, uses_at_open, uses_at_close, reset_entry_id)
LEFT JOIN usage_ledger e ON e.license_id = v.license_id AND e.occurred_at >= v.start_at
     AND e.occurred_at < v.end_at AND e.kind <> 'period_reset'
GROUP BY v.license_id, v.start_at, v.end_at, v.uses_at_open, v.uses_at_close, v.reset_entry_id
"""

# A license's period state, for rollovers: nine columns, no metadata to decode.
_STATE_COLUMNS = """
       l.id, l.uses, l.usage_period, p.usage_period AS policy_usage_period, l.period_anchor,
       l.created, l.period_start, l.period_end, l.period_open_uses
"""
_DUE = f"""
SELECT {_STATE_COLUMNS}
FROM licenses l JOIN policies p ON p.id = l.policy_id
WHERE l.period_end <= :now AND (l.period_end > :after_end
      OR (l.period_end = :after_end AND l.id > :after_id))
ORDER BY l.period_end, l.id
LIMIT :limit
"""  # noqa: S608 - only module constants are interpolated
_BEFORE_ALL = datetime(1, 1, 2, tzinfo=UTC)  # keyset start: before any period end

_ALIGN = """
UPDATE licenses SET period_start = :start, period_end = :end
WHERE id = :id AND period_end = :old_end
"""

# A closed period that holds an instant, and a late record added to it (``bridge.domain.checkin``).
_CLOSED_AT = """
SELECT period_start, period_end, uses_at_close FROM usage_periods
WHERE license_id = :license_id AND period_start <= :at AND :at < period_end
"""
_ADD_LATE = """
UPDATE usage_periods SET uses_at_close = uses_at_close + :n, increments = increments + :n,
       entries = entries + 1, late_increments = late_increments + :n,
       late_entries = late_entries + 1
WHERE license_id = :license_id AND period_start = :start
"""

_UNOPENED = f"""
SELECT {_STATE_COLUMNS}
FROM licenses l JOIN policies p ON p.id = l.policy_id
WHERE l.policy_id = :policy_id AND l.period_end IS NULL
"""  # noqa: S608 - only module constants are interpolated


def reset_entry_id(license_id: str, start: datetime) -> str:
    """The id of a period's reset entry derives from (license, period start): the same close
    always has the same entry, so a retried or concurrent close can never write a second one.
    A name-based UUID (version 5 layout over SHA-1), formatted directly: ``uuid.uuid5`` costs
    ~15 us, a tenth of a period close."""
    h = hashlib.sha1(f"meterbridge/period/{license_id}/{start.isoformat()}".encode()).hexdigest()  # noqa: S324 - an id, not a secret
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


class PeriodSql:
    """The rollover statements in one dialect."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self._due = sql.style(_DUE)
        self._unopened = sql.style(_UNOPENED)
        self._align = sql.style(_ALIGN)
        self._closed_at = sql.style(_CLOSED_AT)
        self._add_late = sql.style(_ADD_LATE)
        self._fill_licenses = sql.style(_SQ_FILL_LICENSES)
        self._fill_closed = sql.style(_SQ_FILL_CLOSED)
        self._close = sql.style(_SQ_CLOSE)

    def write(
        self,
        cursor: Any,
        rollovers: Sequence[tuple[PeriodState, Rollover]],
        now: datetime,
        closed_by: str,
        *,
        skip_stale: bool = False,
    ) -> int:
        """Write the rollovers of several licenses; returns how many periods were closed.

        A stale license (its period or count changed since it was read: a concurrent rollover
        or usage change) fails its guard: ``StoreConflict``, or with ``skip_stale`` it is left
        out (the scheduler's batches: the next run sees it as it is now)."""
        rows = _Rows.build(rollovers, self.sql.ts)
        # The guarded license updates first: they lock the license rows, so a concurrent closer
        # of the same license waits here (then finds its guard false) instead of deadlocking on
        # the unique period key.
        if self.sql.sqlite:
            return self._write_sqlite(cursor, rows, skip_stale, closed_by, now)
        if len(rollovers) > 1:
            # Each array row joins one license and its few ledger entries: index lookups. The
            # planner would hash-join a whole table per batch (and the job closes thousands of
            # batches), so joins other than nested loops are off for this transaction.
            cursor.execute("SET LOCAL enable_hashjoin = off")
            cursor.execute("SET LOCAL enable_mergejoin = off")
        updated: set[str] = set()
        for sql, licenses in ((_PG_UPDATE_CLOSING, rows.closing), (_PG_UPDATE_FIRST, rows.first)):
            if licenses:
                cursor.execute(sql, _columns(licenses, _LICENSE_FIELDS), binary=True)
                updated.update(row["id"] for row in every(cursor))
        rows = self._fresh_only(rows, updated, skip_stale)
        self._write_postgres(cursor, rows.closed, closed_by, now)
        return len(rows.closed)

    def _write_sqlite(
        self, cursor: Any, rows: _Rows, skip_stale: bool, closed_by: str, now: datetime
    ) -> int:
        for sql in _SQ_TABLES:
            cursor.execute(sql)
        licenses = [{"old_end": None, **m} for m in (*rows.closing, *rows.first)]
        cursor.executemany(self._fill_licenses, licenses)
        cursor.executemany(self._fill_closed, rows.closed)
        cursor.execute(_SQ_DROP_STALE)
        if cursor.rowcount > 0:
            if not skip_stale:
                raise StoreConflict("a license went stale under this rollover")
            cursor.execute(_SQ_DROP_STALE_CLOSED)
        cursor.execute(_SQ_UPDATE_LICENSES)
        cursor.execute(_SQ_LEDGER)
        closed = cursor.rowcount
        cursor.execute(self._close, {"closed_by": closed_by, "closed_at": self.sql.ts(now)})
        return int(closed)

    @staticmethod
    def _fresh_only(rows: _Rows, updated: set[str], skip_stale: bool) -> _Rows:
        """``rows`` without the stale licenses' closed periods (those not ``updated``)."""
        if len(updated) == len(rows.closing) + len(rows.first):
            return rows
        if not skip_stale:
            raise StoreConflict("a license went stale under this rollover")
        return rows.only(updated)

    def _write_postgres(
        self, cursor: Any, closed: list[dict[str, Any]], closed_by: str, now: datetime
    ) -> None:
        if closed:
            params: dict[str, Any] = _columns(closed, _CLOSE_FIELDS)
            cursor.execute(_PG_LEDGER, params, binary=True)
            params |= {"closed_by": closed_by, "closed_at": now}
            cursor.execute(_PG_CLOSE, params, binary=True)

    def due(
        self, cursor: Any, now: datetime, limit: int, after: tuple[datetime, str] | None
    ) -> list[PeriodState]:
        """Licenses whose period is due (ended by ``now``), by (period end, id) after ``after``.
        Not locked: the guarded write skips any gone stale meanwhile."""
        after_end, after_id = after or (_BEFORE_ALL, "")
        params = {
            "now": self.sql.ts(now),
            "limit": limit,
            "after_end": self.sql.ts(after_end),
            "after_id": after_id,
        }
        cursor.execute(self._due, params)
        return [self._state(row) for row in every(cursor)]

    def unopened(self, cursor: Any, policy_id: str) -> list[PeriodState]:
        cursor.execute(self._unopened, {"policy_id": policy_id})
        return [self._state(row) for row in every(cursor)]

    def align(
        self, cursor: Any, license_id: str, old_end: datetime, start: datetime, end: datetime
    ) -> bool:
        ts = self.sql.ts
        params = {"id": license_id, "old_end": ts(old_end), "start": ts(start), "end": ts(end)}
        cursor.execute(self._align, params)
        return bool(cursor.rowcount)

    def closed_at(self, cursor: Any, license_id: str, at: datetime) -> ClosedPeriod | None:
        cursor.execute(self._closed_at, {"license_id": license_id, "at": self.sql.ts(at)})
        row = one(cursor, ("period_start", "period_end", "uses_at_close"))
        if row is None:
            return None
        start, end = read_ts(row["period_start"]), read_ts(row["period_end"])
        return ClosedPeriod(start, end, 0, int(row["uses_at_close"]))

    def add_late(self, cursor: Any, license_id: str, start: datetime, n: int) -> None:
        params = {"license_id": license_id, "start": self.sql.ts(start), "n": n}
        cursor.execute(self._add_late, params)

    @staticmethod
    def _state(row: Any) -> PeriodState:
        anchor = read_ts(row["period_anchor"]) or read_ts(row["created"])
        assert anchor is not None, "a license has a creation time"
        return PeriodState(
            license_id=row["id"],
            uses=row["uses"],
            rule=rule_from_json(row["usage_period"]) or rule_from_json(row["policy_usage_period"]),
            anchor=anchor,
            start=read_ts(row["period_start"]),
            end=read_ts(row["period_end"]),
            open_uses=row["period_open_uses"],
        )


@dataclass(slots=True)
class _Rows:
    """The rows a set of rollovers writes, in the store's encoding."""

    closed: list[dict[str, Any]]  # one a closed period, with its reset entry's id
    closing: list[dict[str, Any]]  # the period columns of licenses that close a period
    first: list[dict[str, Any]]  # ... of licenses that open their first period

    @classmethod
    def build(
        cls, rollovers: Sequence[tuple[PeriodState, Rollover]], ts: Callable[[datetime], Any]
    ) -> _Rows:
        rows = cls([], [], [])
        for state, rollover in rollovers:
            for period in rollover.closed:
                rows.closed.append(
                    {
                        "license_id": state.license_id,
                        "start": ts(period.start),
                        "end": ts(period.end),
                        "uses_at_open": period.uses_at_open,
                        "uses_at_close": period.uses_at_close,
                        "reset_entry_id": reset_entry_id(state.license_id, period.start),
                    }
                )
            update = {
                "id": state.license_id,
                "uses": rollover.uses,
                "old_uses": state.uses,
                "start": ts(rollover.start) if rollover.start else None,
                "end": ts(rollover.end) if rollover.end else None,
                "open_uses": rollover.open_uses,
            }
            if state.end is None:
                rows.first.append(update)
            else:
                rows.closing.append({**update, "old_end": ts(state.end)})
        return rows

    def only(self, license_ids: set[str]) -> _Rows:
        return _Rows(
            [r for r in self.closed if r["license_id"] in license_ids],
            self.closing,
            self.first,
        )


_LICENSE_FIELDS = ("id", "uses", "old_uses", "start", "end", "open_uses", "old_end")
_CLOSE_FIELDS = (
    "license_id",
    "start",
    "end",
    "uses_at_open",
    "uses_at_close",
    "reset_entry_id",
)


def _columns(rows: list[dict[str, Any]], fields: Sequence[str]) -> dict[str, list[Any]]:
    """Rows as one array per field (a missing field is all nulls)."""
    return {name: [row.get(name) for row in rows] for name in fields}


class SqlPeriods:
    """``bridge.domain.ports.PeriodWriter`` on a unit of work's cursor."""

    def __init__(self, sql: PeriodSql, cursor: Any) -> None:
        self._sql, self._cursor = sql, cursor

    def write(
        self,
        rollovers: Sequence[tuple[PeriodState, Rollover]],
        now: datetime,
        closed_by: str,
        *,
        skip_stale: bool = False,
    ) -> int:
        return self._sql.write(self._cursor, rollovers, now, closed_by, skip_stale=skip_stale)

    def due(
        self, now: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[PeriodState]:
        return self._sql.due(self._cursor, now, limit, after)

    def unopened(self, policy_id: str) -> list[PeriodState]:
        return self._sql.unopened(self._cursor, policy_id)

    def align(self, license_id: str, old_end: datetime, start: datetime, end: datetime) -> bool:
        return self._sql.align(self._cursor, license_id, old_end, start, end)

    def closed_at(self, license_id: str, at: datetime) -> ClosedPeriod | None:
        """The license's closed period that holds ``at`` (``uses_at_open`` is not read: 0)."""
        return self._sql.closed_at(self._cursor, license_id, at)

    def add_late(self, license_id: str, start: datetime, n: int) -> None:
        """Count a late record of ``n`` uses in the closed period that starts at ``start``."""
        self._sql.add_late(self._cursor, license_id, start, n)
