"""The licenses table: every statement on it, and the projection of a license with its terms.

A license is read with its effective terms (``bridge.domain.model.Terms``) by one projection,
``_SELECT``: the license's own columns and the policy columns its terms come from, mapped by
name in ``license_from_row``. Cursor-level (``bridge.store.sql``): the usage hot path runs
``find`` and the counter updates on every change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from bridge.domain.delivery import LicenseFacts
from bridge.domain.errors import INT4_MAX
from bridge.domain.model import ExpirationBasis, License, MirrorMark, Terms
from bridge.domain.periods import rule_from_json
from bridge.store.sql import Sql, one, read_json, read_ts, total

# The license's own columns, in the order of the table; the one list the statements use.
COLUMNS = (
    "id",
    "key",
    "name",
    "policy_id",
    "uses",
    "max_uses_override",
    "max_machines_override",
    "max_cores_override",
    "protected",
    "suspended",
    "expiry",
    "metadata",
    "created",
    "updated",
    "usage_period",
    "period_anchor",
    "period_start",
    "period_end",
    "period_open_uses",
    "last_validated",
    "last_check_in",
    "key_digest",
    "last_check_out",
)
_FIRST_USE = ExpirationBasis.FROM_FIRST_USE.value
# The projection: the license's columns and the policy columns its terms come from, by name.
_POLICY_COLUMNS = {
    "product_id": "p.product_id",
    "policy_max_uses": "p.max_uses",
    "policy_max_machines": "p.max_machines",
    "policy_max_cores": "p.max_cores",
    "policy_usage_period": "p.usage_period",
    "policy_strict": "p.strict",
    "policy_floating": "p.floating",
    "policy_require_heartbeat": "p.require_heartbeat",
    "policy_expiration_strategy": "p.expiration_strategy",
    "policy_require_check_in": "p.require_check_in",
    "policy_check_in_interval": "p.check_in_interval",
    "policy_check_in_interval_count": "p.check_in_interval_count",
    "policy_scheme": "p.scheme",
    "first_use_duration": f"CASE WHEN p.expiration_basis = '{_FIRST_USE}' THEN p.duration END",
    # Keygen's relationships.machines.meta: index probes (uq_machines_license_fingerprint) in
    # the same statement, so a list page costs no query per license.
    "machines_count": "(SELECT COUNT(*) FROM machines m WHERE m.license_id = l.id)",
    "machines_cores": (
        "(SELECT COALESCE(SUM(m.cores), 0) FROM machines m WHERE m.license_id = l.id)"
    ),
    # The Keygen relay's mark (``MirrorMark``): a primary-key probe of keygen_licenses.
    "mirrored_at": "k.mirrored_at",
    "mirror_max_uses": "k.max_uses",
    "mirror_deleted_at": "k.deleted_at",
}
_PROJECTION = (*COLUMNS, *_POLICY_COLUMNS)
_SELECT = f"""
SELECT {", ".join([*(f"l.{c}" for c in COLUMNS), *_POLICY_COLUMNS.values()])}
FROM licenses l JOIN policies p ON p.id = l.policy_id
LEFT JOIN keygen_licenses k ON k.license_id = l.id
"""  # noqa: S608 - only module constants are interpolated
_FIND = f"""{_SELECT}
WHERE l.id = :ref OR l.key_digest = :digest
ORDER BY CASE WHEN l.id = :ref THEN 0 ELSE 1 END
LIMIT 1
"""
_GET = f"{_SELECT} WHERE l.id = :id"


def _param(column: str) -> str:
    """The column's parameter (JSON is cast from text on PostgreSQL, see ``sql.py``)."""
    return f":{column}::JSON" if column == "metadata" else f":{column}"


_INSERT = f"""
INSERT INTO licenses ({", ".join(COLUMNS)}) VALUES ({", ".join(map(_param, COLUMNS))})
"""  # noqa: S608 - only module constants are interpolated
# Only the usage actions and period rollovers write the counter and the open period, only
# validations write last_validated, only check-ins last_check_in and only check-outs
# last_check_out.
_WRITTEN_ELSEWHERE = (
    "id",
    "uses",
    "period_start",
    "period_end",
    "period_open_uses",
    "last_validated",
    "last_check_in",
    "last_check_out",
)
_UPDATABLE = tuple(c for c in COLUMNS if c not in _WRITTEN_ELSEWHERE)
_UPDATE = f"""
UPDATE licenses SET {", ".join(f"{c} = {_param(c)}" for c in _UPDATABLE)} WHERE id = :id
"""  # noqa: S608 - only module constants are interpolated

# Keygen's rule (bridge.domain.limits.next_uses) as one conditional UPDATE: the database
# serializes concurrent changes on the row, and each caller gets its own exact answer. The
# effective maximum is the SQL form of ``Terms.over``. The sum is computed in 64 bits:
# PostgreSQL raises on int4 overflow instead of comparing. A change is counted only inside the
# open usage period it was timestamped in: one that finds the period closed under it (a
# concurrent rollover) fails here and is re-read and retried.
_EFFECTIVE_MAX = (
    "COALESCE(NULLIF(max_uses_override, 0), "
    "(SELECT p.max_uses FROM policies p WHERE p.id = licenses.policy_id))"
)
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
_LOCK_USES = "SELECT uses FROM licenses WHERE id = :id"
_SET_USES = f"UPDATE licenses SET uses = :uses, updated = :now WHERE id = :id AND {_IN_PERIOD}"  # noqa: S608
# Keygen's touch (TouchLicenseWorker: FOR UPDATE SKIP LOCKED): a validation does not wait for
# a write holding the row; it leaves lastValidated to the next one.
_TOUCH_VALIDATED = "UPDATE licenses SET last_validated = :now WHERE id = :id"
_TOUCH_VALIDATED_PG = f"""{_TOUCH_VALIDATED}
  AND id IN (SELECT id FROM licenses WHERE id = :id FOR UPDATE SKIP LOCKED)"""  # noqa: S608
_CHECK_IN = "UPDATE licenses SET last_check_in = :now WHERE id = :id"
# Keygen's touch of last_check_out_at: the file is rendered first, so it shows the previous one.
_TOUCH_CHECKED_OUT = "UPDATE licenses SET last_check_out = :now WHERE id = :id"
_SET_EXPIRY = "UPDATE licenses SET expiry = :expiry WHERE id = :id AND expiry IS NULL"
_KEY_EXISTS = "SELECT 1 AS found FROM licenses WHERE key_digest = :digest"
_OF_POLICY = "SELECT 1 AS found FROM licenses WHERE policy_id = :policy_id LIMIT 1"
_DELETE = "DELETE FROM licenses WHERE id = :id"
_COUNT = "SELECT COUNT(*) AS total FROM licenses l JOIN policies p ON p.id = l.policy_id"
_LOCK = "SELECT id AS found FROM licenses WHERE id = :id"


def key_digest(key: str) -> str:
    """What a key is found by: keys may be longer than an index entry (signed keys, 16 KiB)."""
    return hashlib.sha256(key.encode()).hexdigest()


# Memoized: a store has few policies, and the usage path maps a license on every change.
@lru_cache(maxsize=1024)
def _policy_terms(
    max_uses: int | None,
    max_machines: int | None,
    max_cores: int | None,
    first_use_duration: int | None,
    usage_period: str | None,
    strict: bool,
    floating: bool,
    require_heartbeat: bool,
    expiration_strategy: str,
    require_check_in: bool = False,
    check_in_interval: str | None = None,
    check_in_interval_count: int | None = None,
    scheme: str | None = None,
) -> Terms:
    rule = rule_from_json(usage_period)
    return Terms(
        max_uses,
        max_machines,
        max_cores,
        first_use_duration,
        rule,
        strict,
        floating,
        require_heartbeat,
        expiration_strategy,
        require_check_in,
        check_in_interval,
        check_in_interval_count,
        scheme,
    )


def license_from_row(row: Any) -> License:
    """A license and its effective terms from a row of the projection, by name."""
    policy = _policy_terms(
        row["policy_max_uses"],
        row["policy_max_machines"],
        row["policy_max_cores"],
        row["first_use_duration"],
        row["policy_usage_period"],
        bool(row["policy_strict"]),
        bool(row["policy_floating"]),
        bool(row["policy_require_heartbeat"]),
        row["policy_expiration_strategy"],
        bool(row["policy_require_check_in"]),
        row["policy_check_in_interval"],
        row["policy_check_in_interval_count"],
        row["policy_scheme"],
    )
    rule = rule_from_json(row["usage_period"])
    return License(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        policy_id=row["policy_id"],
        product_id=row["product_id"],
        uses=row["uses"],
        max_uses_override=row["max_uses_override"],
        protected=bool(row["protected"]),
        suspended=bool(row["suspended"]),
        expiry=read_ts(row["expiry"]),
        metadata=read_json(row["metadata"]),
        created=read_ts(row["created"]),
        updated=read_ts(row["updated"]),
        terms=policy.over(
            max_uses=row["max_uses_override"],
            max_machines=row["max_machines_override"],
            max_cores=row["max_cores_override"],
            usage_period=rule,
        ),
        usage_period_override=rule,
        period_anchor=read_ts(row["period_anchor"]),
        period_start=read_ts(row["period_start"]),
        period_end=read_ts(row["period_end"]),
        period_open_uses=row["period_open_uses"],
        max_machines_override=row["max_machines_override"],
        max_cores_override=row["max_cores_override"],
        last_validated=read_ts(row["last_validated"]),
        last_check_in=read_ts(row["last_check_in"]),
        last_check_out=read_ts(row["last_check_out"]),
        machines_count=int(row["machines_count"]),
        machines_cores=int(row["machines_cores"]),
        mirror=_mirror_mark(row),
    )


def _mirror_mark(row: Any) -> MirrorMark | None:
    mirrored_at = read_ts(row["mirrored_at"])
    if mirrored_at is None:
        return None
    return MirrorMark(
        "keygen", row["mirror_max_uses"], mirrored_at, read_ts(row["mirror_deleted_at"])
    )


def facts_from_row(row: Any) -> LicenseFacts | None:
    """What a sink needs of a license, from ``license_id``, ``key``, ``policy_id`` and
    ``metadata`` (the license's columns joined to another table; None when it is gone)."""
    if row["key"] is None:
        return None
    return LicenseFacts(row["license_id"], row["key"], row["policy_id"], read_json(row["metadata"]))


class FactsCache:
    """License facts by their stored values, for the relay's claims: a backlog holds the same
    licenses batch after batch, and decoding each item's metadata again cost as much as the
    rest of its row. Exact: the key is every value the facts are made of, so a license whose
    key, policy or metadata changed is a new key. Only text metadata (SQLite) is cached;
    PostgreSQL hands it over decoded. The facts are shared, so no sink may change them.
    Bounded: emptied when full (a lookup is then a miss, never a stale hit)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._facts: dict[tuple[str, str, str, str], LicenseFacts] = {}

    def get(
        self, license_id: str, key: str | None, policy_id: str, metadata: Any
    ) -> LicenseFacts | None:
        """The facts of these stored values; None when the license is gone (``key`` NULL)."""
        if key is None:
            return None
        if not isinstance(metadata, str):
            return LicenseFacts(license_id, key, policy_id, read_json(metadata))
        cache_key = (license_id, key, policy_id, metadata)
        facts = self._facts.get(cache_key)
        if facts is None:
            if len(self._facts) >= self._size:
                self._facts.clear()
            facts = self._facts[cache_key] = LicenseFacts(
                license_id, key, policy_id, read_json(metadata)
            )
        return facts


def _values(sql: Sql, lic: License) -> dict[str, Any]:
    rule = lic.usage_period_override
    return {
        "id": lic.id,
        "key": lic.key,
        "name": lic.name,
        "policy_id": lic.policy_id,
        "uses": lic.uses,
        "max_uses_override": lic.max_uses_override,
        "max_machines_override": lic.max_machines_override,
        "max_cores_override": lic.max_cores_override,
        "protected": lic.protected,
        "suspended": lic.suspended,
        "expiry": sql.ts(lic.expiry),
        "metadata": sql.json(lic.metadata),
        "created": sql.ts(lic.created),
        "updated": sql.ts(lic.updated),
        "usage_period": rule.to_json() if rule is not None else None,
        "period_anchor": sql.ts(lic.period_anchor),
        "period_start": sql.ts(lic.period_start),
        "period_end": sql.ts(lic.period_end),
        "period_open_uses": lic.period_open_uses,
        "last_validated": sql.ts(lic.last_validated),
        "last_check_in": sql.ts(lic.last_check_in),
        "key_digest": key_digest(lic.key),
        "last_check_out": sql.ts(lic.last_check_out),
    }


class LicenseStatements:
    """The statements above in one dialect's parameter style (built once per engine)."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.find = sql.style(_FIND)
        self.get = sql.style(_GET)
        self.insert = sql.style(_INSERT)
        self.update = sql.style(_UPDATE)
        self.try_add = sql.style(_TRY_ADD)
        self.lock_uses = sql.style(_LOCK_USES if sql.sqlite else _LOCK_USES + " FOR UPDATE")
        self.set_uses = sql.style(_SET_USES)
        self.set_expiry = sql.style(_SET_EXPIRY)
        self.check_in = sql.style(_CHECK_IN)
        self.touch_validated = sql.style(_TOUCH_VALIDATED if sql.sqlite else _TOUCH_VALIDATED_PG)
        self.touch_checked_out = sql.style(_TOUCH_CHECKED_OUT)
        self.key_exists = sql.style(_KEY_EXISTS)
        self.of_policy = sql.style(_OF_POLICY)
        self.delete = sql.style(_DELETE)
        # FOR UPDATE is left out on SQLite, whose write transaction holds the whole database.
        self.lock = sql.style(_LOCK if sql.sqlite else f"{_LOCK} FOR UPDATE")


class SubjectIndex(Protocol):
    """The webhook subject index (``bridge.store.webhooks``)."""

    def put(self, license: License) -> None: ...
    def drop(self, license_id: str) -> None: ...


class SqlLicenses:
    def __init__(
        self,
        st: LicenseStatements,
        cursor: Any,
        subjects: Callable[[], SubjectIndex] | None = None,
    ) -> None:
        self._st, self._sql, self._cursor = st, st.sql, cursor
        self._subjects = subjects  # the webhook subject index, written with each license

    def _one(
        self, statement: str, params: dict[str, Any], names: tuple[str, ...] = ("found",)
    ) -> dict[str, Any] | None:
        self._cursor.execute(statement, params)
        return one(self._cursor, names)

    # The projection's names are known (``_SELECT`` lists them): rows are zipped with them
    # directly, the cheapest way by name for the usage path, which reads one on every change.
    def _licenses(self, statement: str, params: dict[str, Any]) -> list[License]:
        self._cursor.execute(statement, params)
        return [
            license_from_row(dict(zip(_PROJECTION, r, strict=True)))
            for r in self._cursor.fetchall()
        ]

    def _license(self, statement: str, params: dict[str, Any]) -> License | None:
        self._cursor.execute(statement, params)
        row = self._cursor.fetchone()
        return None if row is None else license_from_row(dict(zip(_PROJECTION, row, strict=True)))

    def find(self, id_or_key: str) -> License | None:
        """By id or key; an id match wins over a key equal to another license's id."""
        return self._license(self._st.find, {"ref": id_or_key, "digest": key_digest(id_or_key)})

    def get(self, license_id: str) -> License | None:
        return self._license(self._st.get, {"id": license_id})

    def add(self, license: License) -> None:
        self._cursor.execute(self._st.insert, _values(self._sql, license))
        if self._subjects is not None:
            self._subjects().put(license)

    def update(self, license: License) -> None:
        values = _values(self._sql, license)
        self._cursor.execute(self._st.update, {c: values[c] for c in ("id", *_UPDATABLE)})
        if self._subjects is not None:
            self._subjects().put(license)

    def delete(self, license_id: str) -> None:
        if self._subjects is not None:
            self._subjects().drop(license_id)
        self._cursor.execute(self._st.delete, {"id": license_id})

    def lock(self, license_id: str) -> bool:
        return self._one(self._st.lock, {"id": license_id}) is not None

    def key_exists(self, key: str) -> bool:
        return self._one(self._st.key_exists, {"digest": key_digest(key)}) is not None

    def any_of_policy(self, policy_id: str) -> bool:
        return self._one(self._st.of_policy, {"policy_id": policy_id}) is not None

    def list(
        self, *, offset: int, limit: int, product_id: str | None, policy_id: str | None
    ) -> tuple[list[License], int]:
        where = ["1 = 1"]
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if product_id is not None:
            where.append("p.product_id = :product_id")
            params["product_id"] = product_id
        if policy_id is not None:
            where.append("l.policy_id = :policy_id")
            params["policy_id"] = policy_id
        condition = " AND ".join(where)
        query = f"{_SELECT} WHERE {condition} ORDER BY l.created, l.id LIMIT :limit OFFSET :offset"
        items = self._licenses(self._sql.style(query), params)
        self._cursor.execute(self._sql.style(f"{_COUNT} WHERE {condition}"), params)
        return items, total(self._cursor)

    # The usage counters -------------------------------------------------------------------
    def try_add_uses(self, license_id: str, delta: int, now: datetime) -> int | None:
        if abs(delta) > INT4_MAX:  # cannot succeed; the caller classifies the rejection
            return None
        params = {
            "id": license_id,
            "delta": delta,
            "now": self._sql.ts(now),
            "unchecked": delta == 0,
        }
        row = self._one(self._st.try_add, params, ("uses",))
        return None if row is None else int(row["uses"])

    def lock_uses(self, license_id: str) -> int | None:
        row = self._one(self._st.lock_uses, {"id": license_id}, ("uses",))
        return None if row is None else int(row["uses"])

    def set_uses(self, license_id: str, uses: int, now: datetime) -> bool:
        """False when the license's usage period does not contain ``now`` (or it is gone)."""
        params = {"id": license_id, "uses": uses, "now": self._sql.ts(now)}
        self._cursor.execute(self._st.set_uses, params)
        return bool(self._cursor.rowcount == 1)

    def touch_validated(self, license_id: str, now: datetime) -> None:
        """Keygen's lastValidated; skipped (PostgreSQL) while another write holds the row."""
        params = {"id": license_id, "now": self._sql.ts(now)}
        self._cursor.execute(self._st.touch_validated, params)

    def check_in(self, license_id: str, now: datetime) -> None:
        """Keygen's lastCheckIn."""
        self._cursor.execute(self._st.check_in, {"id": license_id, "now": self._sql.ts(now)})

    def touch_checked_out(self, license_id: str, now: datetime) -> None:
        """Keygen's lastCheckOut."""
        params = {"id": license_id, "now": self._sql.ts(now)}
        self._cursor.execute(self._st.touch_checked_out, params)

    def set_expiry_if_unset(self, license_id: str, expiry: datetime) -> None:
        params = {"id": license_id, "expiry": self._sql.ts(expiry)}
        self._cursor.execute(self._st.set_expiry, params)
