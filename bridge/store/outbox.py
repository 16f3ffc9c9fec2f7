"""The outbox: every statement on its table, and the one mapper of a claimed item.

Cursor-level (``bridge.store.sql``): every usage change writes its rows, and the relay claims
and marks a batch of every sink in turn. ``ix_outbox_due`` is partial on the undelivered
statuses, written literally in the claim so that both databases see it implies the index's
predicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.domain.delivery import (
    DeadLetter,
    OutboxItem,
    OutboxStatus,
    Reason,
    SinkHealth,
    SinkStatus,
)
from bridge.domain.model import UsageEntry
from bridge.store.ledger import SELECT_COLUMNS, entry_from_row, entry_from_values
from bridge.store.licenses import FactsCache
from bridge.store.sql import Sql, every, one, read_ts, total

_INSERT = """
INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created)
VALUES (:entry_id, :sink, 'pending', 0, :at, :at)
"""
# A change a sink will not be sent (past the platform's accepted window), kept as a dead letter.
_INSERT_DEAD = """
INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created, reason, last_error)
VALUES (:entry_id, :sink, 'dead', 0, :at, :at, :reason, :error)
"""
# The relay's claim: due items of one sink (pending, or in flight past their lease), oldest due
# first, off the partial index ix_outbox_due. PostgreSQL appends FOR UPDATE ... SKIP LOCKED.
# ``SqlOutbox.claim`` reads the columns by position: the item's five, then the entry's.
_CLAIM = f"""
SELECT outbox.id AS item_id, outbox.attempts, l.key, l.policy_id, l.metadata, {SELECT_COLUMNS}
FROM outbox
JOIN usage_ledger e ON e.id = outbox.entry_id
LEFT JOIN licenses l ON l.id = e.license_id
WHERE outbox.sink = :sink
  AND outbox.status IN ('pending', 'inflight')
  AND outbox.next_attempt_at <= :now
ORDER BY outbox.next_attempt_at, outbox.id
LIMIT :limit
"""  # noqa: S608 - only module constants are interpolated
_SKIP_LOCKED = "FOR UPDATE OF outbox SKIP LOCKED"
_LEASE = """
UPDATE outbox SET status = 'inflight', next_attempt_at = :lease_until, attempts = attempts + 1
WHERE id IN_IDS
"""
_MARK = "UPDATE outbox SET status = :status, last_error = :error, reason = :reason WHERE id IN_IDS"
_MARK_AT = """
UPDATE outbox SET status = :status, last_error = :error, reason = :reason, next_attempt_at = :at
WHERE id IN_IDS
"""
_RELEASE = """
UPDATE outbox SET status = 'pending', next_attempt_at = :now WHERE id IN_IDS AND status = 'inflight'
"""
_PENDING = "SELECT COUNT(*) AS total FROM outbox WHERE status = 'pending'"
_STATUS = """
SELECT sink, status, reason, COUNT(*) AS count, MIN(created) AS oldest
FROM outbox GROUP BY sink, status, reason ORDER BY sink, status
"""
# The same, for the undelivered statuses only: off the partial indexes ix_outbox_due and
# ix_outbox_dead, so a scrape or ``status`` does not read the delivered history.
_UNDELIVERED = """
SELECT sink, status, reason, COUNT(*) AS count, MIN(created) AS oldest
FROM outbox WHERE status IN ('pending', 'inflight') GROUP BY sink, status, reason
UNION ALL
SELECT sink, status, reason, COUNT(*) AS count, MIN(created) AS oldest
FROM outbox WHERE status = 'dead' GROUP BY sink, status, reason
"""
# Retention: delivered rows are deleted a range of ids at a time (ids follow creation), each
# range one short transaction, so neither database holds locks for long.
_ID_BOUNDS = "SELECT MIN(id) AS low, MAX(id) AS high FROM outbox"
_PURGE_RANGE = """
DELETE FROM outbox
WHERE id >= :low AND id < :high AND sink = :sink AND status = 'delivered' AND created < :before
"""
_RANGE_NEWEST = "SELECT MIN(created) AS oldest FROM outbox WHERE id >= :low AND id < :high"
_WATERMARK_GET = "SELECT sink, purged_before FROM outbox_purges"
_WATERMARK_SET_SQLITE = """
INSERT INTO outbox_purges (sink, purged_before) VALUES (:sink, :before)
ON CONFLICT (sink) DO UPDATE SET purged_before = MAX(purged_before, excluded.purged_before)
"""
_WATERMARK_SET_PG = """
INSERT INTO outbox_purges (sink, purged_before) VALUES (:sink, :before)
ON CONFLICT (sink) DO UPDATE SET purged_before = GREATEST(outbox_purges.purged_before,
                                                         excluded.purged_before)
"""
_HEALTH_COLUMNS = (
    "sink, failures, circuit_open_until, paused_until, last_error, last_error_at, updated_at"
)
_HEALTH_SAVE = f"""
INSERT INTO sink_health ({_HEALTH_COLUMNS})
VALUES (:sink, :failures, :circuit_open_until, :paused_until, :last_error, :last_error_at, :now)
ON CONFLICT (sink) DO UPDATE SET failures = excluded.failures,
    circuit_open_until = excluded.circuit_open_until, paused_until = excluded.paused_until,
    last_error = COALESCE(excluded.last_error, sink_health.last_error),
    last_error_at = COALESCE(excluded.last_error_at, sink_health.last_error_at),
    updated_at = excluded.updated_at
"""  # noqa: S608 - only module constants are interpolated
_HEALTH = f"SELECT {_HEALTH_COLUMNS} FROM sink_health ORDER BY sink"  # noqa: S608
_DEAD = f"""
SELECT outbox.id AS item_id, outbox.sink, outbox.attempts, outbox.last_error, outbox.reason,
       {SELECT_COLUMNS}
FROM outbox JOIN usage_ledger e ON e.id = outbox.entry_id
WHERE outbox.status = 'dead' AND (CAST(:sink AS VARCHAR) IS NULL OR outbox.sink = :sink)
ORDER BY outbox.id LIMIT :limit OFFSET :offset
"""  # noqa: S608 - only module constants are interpolated
_REQUEUE_DEAD = """
UPDATE outbox SET status = 'pending', next_attempt_at = :now, attempts = 0, reason = NULL
WHERE status = 'dead' AND (CAST(:sink AS VARCHAR) IS NULL OR sink = :sink)
"""
_REQUEUE_DELIVERED = """
UPDATE outbox SET status = 'pending', next_attempt_at = :now, last_error = NULL, reason = NULL
WHERE status = 'delivered' AND sink = :sink AND entry_id IN (SELECT value FROM json_each(:ids))
"""
# Items of entries a platform accepted but will not bill (a webhook says so): per license, then
# dead-lettered with their reason.
_REJECTED_PER_LICENSE = """
SELECT e.license_id, COUNT(*) AS count FROM outbox JOIN usage_ledger e ON e.id = outbox.entry_id
WHERE outbox.sink = :sink AND outbox.entry_id IN (SELECT value FROM json_each(:ids))
GROUP BY e.license_id
"""
_REJECT = """
UPDATE outbox SET status = 'dead', reason = :reason, last_error = :error
WHERE sink = :sink AND entry_id IN (SELECT value FROM json_each(:ids))
"""


def _by_entry_ids(statement: str, sqlite: bool) -> str:
    """Entry ids arrive as a JSON array on SQLite and as an array parameter on PostgreSQL."""
    if sqlite:
        return statement
    return statement.replace("IN (SELECT value FROM json_each(:ids))", "= ANY(:ids)")


class OutboxStatements:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.insert = sql.style(_INSERT)
        self.insert_dead = sql.style(_INSERT_DEAD)
        self.claim = sql.style(_CLAIM if sql.sqlite else f"{_CLAIM}{_SKIP_LOCKED}\n")
        self.facts = FactsCache()  # the claims' license facts, shared by this engine's relays
        self.lease = sql.style(_LEASE)
        self.mark = sql.style(_MARK)
        self.mark_at = sql.style(_MARK_AT)
        self.release = sql.style(_RELEASE)
        self.pending = sql.style(_PENDING)
        self.status = sql.style(_STATUS)
        self.undelivered = sql.style(_UNDELIVERED)
        self.save_health = sql.style(_HEALTH_SAVE)
        self.health = sql.style(_HEALTH)
        self.id_bounds = sql.style(_ID_BOUNDS)
        self.purge_range = sql.style(_PURGE_RANGE)
        self.range_oldest = sql.style(_RANGE_NEWEST)
        self.watermarks = sql.style(_WATERMARK_GET)
        self.set_watermark = sql.style(_WATERMARK_SET_SQLITE if sql.sqlite else _WATERMARK_SET_PG)
        self.dead = sql.style(_DEAD)
        self.requeue_dead = sql.style(_REQUEUE_DEAD)
        self.requeue_dead_ids = sql.style(_REQUEUE_DEAD.rstrip() + " AND id IN_IDS")
        self.requeue_delivered = sql.style(_by_entry_ids(_REQUEUE_DELIVERED, sql.sqlite))
        self.rejected_per_license = sql.style(_by_entry_ids(_REJECTED_PER_LICENSE, sql.sqlite))
        self.reject = sql.style(_by_entry_ids(_REJECT, sql.sqlite))


class SqlOutbox:
    def __init__(self, st: OutboxStatements, cursor: Any) -> None:
        self._st, self._sql, self._cursor = st, st.sql, cursor

    def add(self, entry: UsageEntry, sinks: Sequence[str]) -> None:
        at = self._sql.ts(entry.occurred_at)
        rows = [{"entry_id": entry.id, "sink": sink, "at": at} for sink in sinks]
        if len(rows) == 1:
            self._cursor.execute(self._st.insert, rows[0])
        elif rows:
            self._cursor.executemany(self._st.insert, rows)

    def add_dead(self, entry: UsageEntry, sinks: Sequence[str], reason: Reason, error: str) -> None:
        """Rows for ``sinks`` that are dead letters from the start, with their reason."""
        at = self._sql.ts(entry.occurred_at)
        for sink in sinks:
            row = {"entry_id": entry.id, "sink": sink, "at": at, "reason": reason, "error": error}
            self._cursor.execute(self._st.insert_dead, row)

    def claim(
        self, sink: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[OutboxItem]:
        """Take up to ``limit`` due items of ``sink`` (pending, or in flight with an expired
        lease), with their ledger entries and license facts, and lease them until
        ``lease_until``. Concurrent relays on PostgreSQL skip each other's rows; on SQLite one
        relay runs per database file."""
        cursor, sql = self._cursor, self._sql
        cursor.execute(self._st.claim, {"sink": sink, "now": sql.ts(now), "limit": limit})
        rows = cursor.fetchall()  # by position (``_CLAIM``'s columns): no dict per row
        if not rows:
            return []
        ids = [r[0] for r in rows]
        cursor.execute(self._st.lease, {"ids": sql.ids(ids), "lease_until": sql.ts(lease_until)})
        facts = self._st.facts
        items = []
        for r in rows:
            entry = entry_from_values(r[5:])
            # None: the license is gone, its history still billable.
            license = facts.get(entry.license_id, r[2], r[3], r[4])
            items.append(OutboxItem(r[0], sink, r[1] + 1, entry, license))
        return items

    def mark(
        self,
        ids: Sequence[int],
        status: OutboxStatus,
        *,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        params = {
            "ids": self._sql.ids(ids),
            "status": status.value,
            "error": error,
            "reason": reason.value if reason is not None else None,
        }
        if next_attempt_at is None:
            self._cursor.execute(self._st.mark, params)
        else:
            params["at"] = self._sql.ts(next_attempt_at)
            self._cursor.execute(self._st.mark_at, params)

    def release(self, ids: Sequence[int], now: datetime) -> None:
        """Items still in flight back to pending, due ``now`` (their lease given up)."""
        self._cursor.execute(
            self._st.release, {"ids": self._sql.ids(ids), "now": self._sql.ts(now)}
        )

    def pending_count(self) -> int:
        self._cursor.execute(self._st.pending)
        return total(self._cursor)

    def status(self, *, undelivered: bool = False) -> list[SinkStatus]:
        """Counts per sink and status, by reason, and the creation time of the oldest
        undelivered item; ``undelivered``: pending, in flight and dead only (cheap)."""
        self._cursor.execute(self._st.undelivered if undelivered else self._st.status)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in every(self._cursor):
            groups.setdefault((r["sink"], r["status"]), []).append(r)
        return [
            SinkStatus(
                sink,
                OutboxStatus(status),
                sum(r["count"] for r in rows),
                min((read_ts(r["oldest"]) for r in rows if r["oldest"] is not None), default=None),
                {Reason(r["reason"]): r["count"] for r in rows if r["reason"] is not None},
            )
            for (sink, status), rows in groups.items()
        ]

    def save_health(self, health: SinkHealth) -> None:
        """Record a sink's circuit, pause and last error (a None error keeps the last one)."""
        ts = self._sql.ts
        self._cursor.execute(
            self._st.save_health,
            {
                "sink": health.sink,
                "failures": health.failures,
                "circuit_open_until": ts(health.circuit_open_until),
                "paused_until": ts(health.paused_until),
                "last_error": health.last_error,
                "last_error_at": ts(health.last_error_at),
                "now": ts(health.updated_at),
            },
        )

    def health(self) -> list[SinkHealth]:
        self._cursor.execute(self._st.health)
        return [
            SinkHealth(
                r["sink"],
                int(r["failures"]),
                read_ts(r["circuit_open_until"]),
                read_ts(r["paused_until"]),
                r["last_error"],
                read_ts(r["last_error_at"]),
                read_ts(r["updated_at"]),
            )
            for r in every(self._cursor)
        ]

    def id_bounds(self) -> tuple[int, int] | None:
        """The lowest and highest outbox ids, None when it is empty."""
        self._cursor.execute(self._st.id_bounds)
        row = one(self._cursor)
        if row is None or row["low"] is None:
            return None
        return int(row["low"]), int(row["high"])

    def purge_delivered(self, low: int, high: int, before: dict[str, datetime]) -> int:
        """Delete the delivered items with ids in [low, high) created before ``before`` of
        their sink (``mark_purged`` first); how many rows went."""
        deleted = 0
        for sink, at in before.items():
            params = {"low": low, "high": high, "sink": sink, "before": self._sql.ts(at)}
            self._cursor.execute(self._st.purge_range, params)
            deleted += max(int(self._cursor.rowcount), 0)
        return deleted

    def range_oldest(self, low: int, high: int) -> datetime | None:
        """The creation time of the oldest item left with an id in [low, high)."""
        self._cursor.execute(self._st.range_oldest, {"low": low, "high": high})
        row = one(self._cursor)
        return read_ts(row["oldest"]) if row is not None and row["oldest"] is not None else None

    def purged_before(self) -> dict[str, datetime]:
        """Per sink, the time before which delivered items may have been purged."""
        self._cursor.execute(self._st.watermarks)
        return {r["sink"]: read_ts(r["purged_before"]) for r in every(self._cursor)}

    def mark_purged(self, before: dict[str, datetime]) -> None:
        """Record (never lower) each sink's purge watermark, before its rows are deleted."""
        for sink, at in before.items():
            self._cursor.execute(self._st.set_watermark, {"sink": sink, "before": self._sql.ts(at)})

    def dead_letters(self, sink: str | None, *, offset: int, limit: int) -> list[DeadLetter]:
        """Dead-lettered items, oldest first, with the error that sent them there."""
        self._cursor.execute(self._st.dead, {"sink": sink, "offset": offset, "limit": limit})
        return [
            DeadLetter(
                OutboxItem(r["item_id"], r["sink"], r["attempts"], entry_from_row(r)),
                r["last_error"],
                Reason(r["reason"]) if r["reason"] else None,
            )
            for r in every(self._cursor)
        ]

    def requeue_dead(self, sink: str | None, ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead letters pending again, due now, with their original entry ids."""
        params: dict[str, Any] = {"sink": sink, "now": self._sql.ts(now)}
        if ids is None:
            self._cursor.execute(self._st.requeue_dead, params)
        else:
            self._cursor.execute(self._st.requeue_dead_ids, {**params, "ids": self._sql.ids(ids)})
        return int(self._cursor.rowcount)

    def requeue_delivered(self, entry_ids: Sequence[str], sink: str, now: datetime) -> int:
        """Delivered items of these entries back to pending, due now: same ids, so the
        platform deduplicates whatever it already holds (reconciliation's repair)."""
        if not entry_ids:
            return 0
        params = {"sink": sink, "now": self._sql.ts(now), "ids": self._entry_ids(entry_ids)}
        self._cursor.execute(self._st.requeue_delivered, params)
        return int(self._cursor.rowcount)

    def reject_after_acceptance(
        self, entry_ids: Sequence[str], sink: str, error: str
    ) -> dict[str, int]:
        """The platform took these entries but will not bill them: their items become dead
        letters with the reason ``rejected_after_acceptance``. Returns how many items each
        license had among them, for its history."""
        if not entry_ids:
            return {}
        params = {"sink": sink, "ids": self._entry_ids(entry_ids)}
        self._cursor.execute(self._st.rejected_per_license, params)
        counts = {str(r["license_id"]): int(r["count"]) for r in every(self._cursor)}
        reason = Reason.REJECTED_AFTER_ACCEPTANCE.value
        self._cursor.execute(self._st.reject, {**params, "reason": reason, "error": error[:1000]})
        return counts

    def _entry_ids(self, entry_ids: Sequence[str]) -> Any:
        return self._sql.json(list(entry_ids)) if self._sql.sqlite else list(entry_ids)
