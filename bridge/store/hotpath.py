"""The hot paths, run on the DBAPI cursor of the unit of work's connection.

A usage change is four small statements (find the license, conditional update, ledger insert,
outbox insert), plus a few on rarer paths (reset, first-use expiry, Idempotency-Key). Through
SQLAlchemy's ``Connection.execute`` each costs ~130 us of CPU for cache-key generation and
execution-context set-up, about five times the statement itself (measured with
``bench/store_sqlite.py``), so they are written once here as plain SQL and sent straight to the
driver by ``bridge.store.usage_uow``. The outbox relay's claim and mark statements run here too
(``bridge.store.repositories.SqlOutbox``), for the same reason: they run once per batch of
every sink, and the claim maps a whole batch of rows. Everything else in the store goes through
SQLAlchemy Core.

The SQL is the same on SQLite and PostgreSQL; only the parameter style (``:name`` for sqlite3,
``%(name)s`` for psycopg) and the datetime/JSON encodings differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from bridge.domain.delivery import LicenseFacts, OutboxItem, OutboxStatus, Reason
from bridge.domain.errors import INT4_MAX
from bridge.domain.model import License, UsageEntry, UsageKind
from bridge.domain.periods import rule_from_json

_EFFECTIVE_MAX = (
    "COALESCE(NULLIF(max_uses_override, 0), "
    "(SELECT p.max_uses FROM policies p WHERE p.id = licenses.policy_id))"
)

FIND_COLUMNS = """
       l.id, l.key, l.name, l.policy_id, l.uses, l.max_uses_override, l.protected,
       l.suspended, l.expiry, l.metadata, l.created, l.updated, p.product_id, p.max_uses,
       CASE WHEN p.expiration_basis = 'FROM_FIRST_USE' THEN p.duration END,
       l.max_machines_override, l.max_cores_override, p.max_machines, p.max_cores,
       l.usage_period, p.usage_period, l.period_anchor, l.period_start, l.period_end,
       l.period_open_uses, p.strict, p.floating
"""
_FIND = f"""
SELECT {FIND_COLUMNS}
FROM licenses l JOIN policies p ON p.id = l.policy_id
WHERE l.id = :ref OR l.key = :ref
ORDER BY CASE WHEN l.id = :ref THEN 0 ELSE 1 END
LIMIT 1
"""  # noqa: S608 - only module constants are interpolated

# Keygen's rule (bridge.domain.limits.next_uses) as one conditional UPDATE: the database
# serializes concurrent changes on the row, and each caller gets its own exact answer.
# The sum is computed in 64 bits: PostgreSQL raises on int4 overflow instead of comparing.
# A change is counted only inside the open usage period it was timestamped in: one that finds
# the period closed under it (a concurrent rollover) fails here and is re-read and retried.
_NEW = "(uses + CAST(:delta AS BIGINT))"
_IN_PERIOD = "(period_end IS NULL OR (period_start <= :now AND :now < period_end))"
_TRY_ADD = f"""
UPDATE licenses SET uses = {_NEW}, updated = :now
WHERE id = :id
  AND {_NEW} >= 0
  AND {_NEW} <= {INT4_MAX}
  AND (:unchecked OR {_EFFECTIVE_MAX} IS NULL OR {_NEW} <= {_EFFECTIVE_MAX})
  AND {_IN_PERIOD}
RETURNING uses
"""  # noqa: S608 - only module constants are interpolated

_LEDGER = """
INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor,
                          idempotency_key, request_id, occurred_at, machine_id)
VALUES (:id, :license_id, :kind, :delta, :uses_before, :uses_after, :actor,
        :idempotency_key, :request_id, :occurred_at, :machine_id)
"""

_OUTBOX = """
INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created)
VALUES (:entry_id, :sink, 'pending', 0, :at, :at)
"""

# The relay's claim: due items of one sink (pending, or in flight past their lease), oldest due
# first, read off the partial index ix_outbox_due (the status test is literal so that both
# databases see it implies the index's predicate). PostgreSQL appends FOR UPDATE ... SKIP LOCKED.
_CLAIM = """
SELECT outbox.id, outbox.attempts, l.key, l.policy_id, l.metadata,
       e.id, e.license_id, e.kind, e.delta, e.uses_before, e.uses_after, e.actor,
       e.idempotency_key, e.request_id, e.occurred_at, e.seq, e.machine_id
FROM outbox
JOIN usage_ledger e ON e.id = outbox.entry_id
LEFT JOIN licenses l ON l.id = e.license_id
WHERE outbox.sink = :sink
  AND outbox.status IN ('pending', 'inflight')
  AND outbox.next_attempt_at <= :now
ORDER BY outbox.next_attempt_at, outbox.id
LIMIT :limit
"""
_SKIP_LOCKED = "FOR UPDATE OF outbox SKIP LOCKED"
# ``:ids`` is a JSON array on SQLite and an array parameter on PostgreSQL (see _IN_IDS).
_LEASE = """
UPDATE outbox SET status = 'inflight', next_attempt_at = :lease_until, attempts = attempts + 1
WHERE id IN_IDS
"""
_MARK = "UPDATE outbox SET status = :status, last_error = :error, reason = :reason WHERE id IN_IDS"
_MARK_AT = """
UPDATE outbox SET status = :status, last_error = :error, reason = :reason, next_attempt_at = :at
WHERE id IN_IDS
"""
_IN_IDS = {"sqlite": "IN (SELECT value FROM json_each(:ids))", "postgresql": "= ANY(:ids)"}
_KINDS = {kind.value: kind for kind in UsageKind}

_TOKEN = "SELECT role, bearer_id FROM tokens WHERE digest = :digest"  # noqa: S105 - SQL
_LOCK_USES = "SELECT uses FROM licenses WHERE id = :id"
_SET_USES = f"UPDATE licenses SET uses = :uses, updated = :now WHERE id = :id AND {_IN_PERIOD}"  # noqa: S608
_SET_EXPIRY = "UPDATE licenses SET expiry = :expiry WHERE id = :id AND expiry IS NULL"
_KEY_GET = "SELECT fingerprint, result FROM idempotency_keys WHERE scope = :scope AND key = :key"
_KEY_CLAIM = """
INSERT INTO idempotency_keys (scope, key, fingerprint, result, created)
VALUES (:scope, :key, :fingerprint, '{}', :now)
"""
_KEY_RECORD = "UPDATE idempotency_keys SET result = :result WHERE scope = :scope AND key = :key"


class HotPath:
    """The hot statements for one SQL dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        style = self.style
        self._find = style(_FIND)
        self._try_add = style(_TRY_ADD)
        self._ledger = style(_LEDGER)
        self._outbox = style(_OUTBOX)
        self._token = style(_TOKEN)
        self._lock_uses = style(_LOCK_USES if self.sqlite else _LOCK_USES + " FOR UPDATE")
        self._set_uses = style(_SET_USES)
        self._set_expiry = style(_SET_EXPIRY)
        self._key_get = style(_KEY_GET)
        self._key_claim = style(_KEY_CLAIM)
        json_param = ":result" if self.sqlite else "CAST(:result AS JSON)"
        self._key_record = style(_KEY_RECORD.replace(":result", json_param))
        in_ids = _IN_IDS["sqlite" if self.sqlite else "postgresql"]
        self._claim = style(_CLAIM if self.sqlite else f"{_CLAIM}{_SKIP_LOCKED}\n")
        self._lease = style(_LEASE.replace("IN_IDS", in_ids))
        self._mark = style(_MARK.replace("IN_IDS", in_ids))
        self._mark_at = style(_MARK_AT.replace("IN_IDS", in_ids))

    def style(self, sql: str) -> str:
        """``sql`` in the driver's parameter style."""
        return sql if self.sqlite else _pyformat(sql)

    # Encodings: SQLite stores naive UTC text in SQLAlchemy's format and JSON as text.
    def ts(self, value: datetime) -> Any:
        return _sqlite_text(value) if self.sqlite else value

    def read_ts(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return _sqlite_moment(value)
        moment: datetime = value
        return moment.astimezone(UTC)

    def find_license(self, cursor: Any, ref: str) -> License | None:
        cursor.execute(self._find, {"ref": ref})
        row = cursor.fetchone()
        return None if row is None else self.license_from_row(row)

    def license_from_row(self, row: Sequence[Any]) -> License:
        """A license from a row of ``FIND_COLUMNS``."""
        metadata = row[9]
        return License(
            id=row[0],
            key=row[1],
            name=row[2],
            policy_id=row[3],
            uses=row[4],
            max_uses_override=row[5],
            protected=bool(row[6]),
            suspended=bool(row[7]),
            expiry=self.read_ts(row[8]),
            metadata=json.loads(metadata) if isinstance(metadata, str) else metadata,
            created=self.read_ts(row[10]),  # type: ignore[arg-type]
            updated=self.read_ts(row[11]),  # type: ignore[arg-type]
            product_id=row[12],
            policy_max_uses=row[13],
            policy_first_use_duration=row[14],
            max_machines_override=row[15],
            max_cores_override=row[16],
            policy_max_machines=row[17],
            policy_max_cores=row[18],
            usage_period_override=rule_from_json(row[19]),
            policy_usage_period=rule_from_json(row[20]),
            period_anchor=self.read_ts(row[21]),
            period_start=self.read_ts(row[22]),
            period_end=self.read_ts(row[23]),
            period_open_uses=row[24],
            policy_strict=bool(row[25]),
            policy_floating=bool(row[26]),
        )

    def try_add_uses(self, cursor: Any, license_id: str, delta: int, now: datetime) -> int | None:
        if abs(delta) > INT4_MAX:  # cannot succeed; the caller classifies the rejection
            return None
        params = {"id": license_id, "delta": delta, "now": self.ts(now), "unchecked": delta == 0}
        cursor.execute(self._try_add, params)
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def add_entry(self, cursor: Any, entry: UsageEntry) -> None:
        cursor.execute(self._ledger, entry_row(entry, self.ts(entry.occurred_at)))

    def add_outbox(self, cursor: Any, entry: UsageEntry, sinks: Sequence[str]) -> None:
        at = self.ts(entry.occurred_at)
        rows = [{"entry_id": entry.id, "sink": sink, "at": at} for sink in sinks]
        if len(rows) == 1:
            cursor.execute(self._outbox, rows[0])
        elif rows:
            cursor.executemany(self._outbox, rows)

    def lock_uses(self, cursor: Any, license_id: str) -> int | None:
        cursor.execute(self._lock_uses, {"id": license_id})
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def set_uses(self, cursor: Any, license_id: str, uses: int, now: datetime) -> bool:
        """False when the license's usage period does not contain ``now`` (or it is gone)."""
        cursor.execute(self._set_uses, {"id": license_id, "uses": uses, "now": self.ts(now)})
        return bool(cursor.rowcount == 1)

    def set_expiry_if_unset(self, cursor: Any, license_id: str, expiry: datetime) -> None:
        cursor.execute(self._set_expiry, {"id": license_id, "expiry": self.ts(expiry)})

    def get_key(self, cursor: Any, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        cursor.execute(self._key_get, {"scope": scope, "key": key})
        row = cursor.fetchone()
        if row is None:
            return None
        result = json.loads(row[1]) if isinstance(row[1], str) else row[1]
        return row[0], result

    def claim_key(self, cursor: Any, scope: str, key: str, fingerprint: str, now: datetime) -> None:
        params = {"scope": scope, "key": key, "fingerprint": fingerprint, "now": self.ts(now)}
        cursor.execute(self._key_claim, params)

    def record_key(self, cursor: Any, scope: str, key: str, result: dict[str, Any]) -> None:
        params = {"scope": scope, "key": key, "result": json.dumps(result)}
        cursor.execute(self._key_record, params)

    # The outbox relay -----------------------------------------------------------------------
    def _ids(self, ids: Sequence[int]) -> Any:
        return json.dumps(list(ids)) if self.sqlite else list(ids)

    def claim_outbox(
        self, cursor: Any, sink: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[OutboxItem]:
        """Read up to ``limit`` due items of ``sink`` with their ledger entries and license
        facts, and lease them until ``lease_until``."""
        cursor.execute(self._claim, {"sink": sink, "now": self.ts(now), "limit": limit})
        rows = cursor.fetchall()
        if not rows:
            return []
        params = {"ids": self._ids([r[0] for r in rows]), "lease_until": self.ts(lease_until)}
        cursor.execute(self._lease, params)
        facts: dict[str, LicenseFacts | None] = {}  # a batch often holds one license many times
        items = []
        for r in rows:
            license_id = r[6]
            if license_id not in facts:
                metadata = r[4]
                facts[license_id] = (
                    None
                    if r[2] is None  # the license is gone; its history is still billable
                    else LicenseFacts(
                        license_id,
                        r[2],
                        r[3],
                        json.loads(metadata) if isinstance(metadata, str) else metadata,
                    )
                )
            entry = UsageEntry(
                r[5],
                license_id,
                _KINDS[r[7]],
                r[8],
                r[9],
                r[10],
                r[11],
                r[12],
                r[13],
                self.read_ts(r[14]),  # type: ignore[arg-type]
                r[15],
                r[16],
            )
            items.append(OutboxItem(r[0], sink, r[1] + 1, entry, facts[license_id]))
        return items

    def mark_outbox(
        self,
        cursor: Any,
        ids: Sequence[int],
        status: OutboxStatus,
        next_attempt_at: datetime | None,
        error: str | None,
        reason: Reason | None = None,
    ) -> None:
        params = {"ids": self._ids(ids), "status": status.value, "error": error, "reason": reason}
        if next_attempt_at is None:
            cursor.execute(self._mark, params)
        else:
            cursor.execute(self._mark_at, {**params, "at": self.ts(next_attempt_at)})

    def find_token(self, cursor: Any, digest: str) -> tuple[str, str] | None:
        cursor.execute(self._token, {"digest": digest})
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1])


def entry_row(entry: UsageEntry, occurred_at: Any) -> dict[str, Any]:
    """The ledger row of an entry, with ``occurred_at`` as the caller encodes it."""
    return {
        "id": entry.id,
        "license_id": entry.license_id,
        "kind": entry.kind.value,
        "delta": entry.delta,
        "uses_before": entry.uses_before,
        "uses_after": entry.uses_after,
        "actor": entry.actor,
        "idempotency_key": entry.idempotency_key,
        "request_id": entry.request_id,
        "occurred_at": occurred_at,
        "machine_id": entry.machine_id,
    }


# Memoized: a period job encodes the same few boundaries for thousands of licenses.
@lru_cache(maxsize=4096)
def _sqlite_text(value: datetime) -> str:
    v = value.astimezone(UTC)  # an f-string: strftime costs ~25 us a call
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


@lru_cache(maxsize=4096)
def _sqlite_moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _pyformat(sql: str) -> str:
    """``:name`` placeholders to psycopg's ``%(name)s`` (the SQL holds no other colon or %)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)
