"""Policies: every statement on their table, and the row mapper.

Cursor-level (``bridge.store.sql``): every machine activation reads its license's policy.
"""

from __future__ import annotations

from typing import Any

from bridge.domain.model import ExpirationBasis, OverageStrategy, Policy
from bridge.domain.periods import PeriodRule, rule_from_json
from bridge.store.sql import Sql, read_json, read_ts, total

# The policy's columns, in the order of the table; the one list the statements use.
COLUMNS = (
    "id",
    "product_id",
    "name",
    "max_uses",
    "max_machines",
    "max_cores",
    "floating",
    "strict",
    "overage_strategy",
    "protected",
    "duration",
    "heartbeat_duration",
    "expiration_basis",
    "require_heartbeat",
    "heartbeat_cull_strategy",
    "heartbeat_resurrection_strategy",
    "heartbeat_basis",
    "expiration_strategy",
    "scheme",
    "usage_period",
    "metadata",
    "created",
    "updated",
    "require_check_in",
    "check_in_interval",
    "check_in_interval_count",
)


def _param(column: str) -> str:
    """The column's parameter (JSON is cast from text on PostgreSQL, see ``sql.py``)."""
    return f":{column}::JSON" if column == "metadata" else f":{column}"


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM policies"  # noqa: S608 - module constants
_GET = f"{_SELECT} WHERE id = :id"
_INSERT = f"""
INSERT INTO policies ({", ".join(COLUMNS)}) VALUES ({", ".join(map(_param, COLUMNS))})
"""  # noqa: S608 - only module constants are interpolated
_UPDATE = f"""
UPDATE policies SET {", ".join(f"{c} = {_param(c)}" for c in COLUMNS if c != "id")}
WHERE id = :id
"""  # noqa: S608 - only module constants are interpolated
_DELETE = "DELETE FROM policies WHERE id = :id"
_WHERE = {True: "WHERE product_id = :product_id", False: ""}
_PAGE = f"{_SELECT} {{where}} ORDER BY created, id LIMIT :limit OFFSET :offset"
_COUNT = "SELECT COUNT(*) AS total FROM policies {where}"


def _policy(row: dict[str, Any]) -> Policy:
    return Policy(
        id=row["id"],
        product_id=row["product_id"],
        name=row["name"],
        max_uses=row["max_uses"],
        max_machines=row["max_machines"],
        max_cores=row["max_cores"],
        floating=bool(row["floating"]),
        strict=bool(row["strict"]),
        overage_strategy=OverageStrategy(row["overage_strategy"]),
        protected=bool(row["protected"]),
        duration=row["duration"],
        expiration_basis=ExpirationBasis(row["expiration_basis"]),
        metadata=read_json(row["metadata"]),
        created=read_ts(row["created"]),
        updated=read_ts(row["updated"]),
        usage_period=rule_from_json(row["usage_period"]),
        heartbeat_duration=row["heartbeat_duration"],
        require_heartbeat=bool(row["require_heartbeat"]),
        heartbeat_cull_strategy=row["heartbeat_cull_strategy"],
        heartbeat_resurrection_strategy=row["heartbeat_resurrection_strategy"],
        heartbeat_basis=row["heartbeat_basis"],
        expiration_strategy=row["expiration_strategy"],
        require_check_in=bool(row["require_check_in"]),
        check_in_interval=row["check_in_interval"],
        check_in_interval_count=row["check_in_interval_count"],
        scheme=row["scheme"],
    )


def _rule_json(rule: PeriodRule | None) -> str | None:
    return rule.to_json() if rule is not None else None


class PolicyStatements:
    """The statements above in one dialect's parameter style (built once per engine)."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.get = sql.style(_GET)
        self.insert = sql.style(_INSERT)
        self.update = sql.style(_UPDATE)
        self.delete = sql.style(_DELETE)
        # By whether a product is given.
        self.page = {k: sql.style(_PAGE.format(where=w)) for k, w in _WHERE.items()}
        self.count = {k: sql.style(_COUNT.format(where=w)) for k, w in _WHERE.items()}


class SqlPolicies:
    def __init__(self, st: PolicyStatements, cursor: Any) -> None:
        self._st, self._sql, self._cursor = st, st.sql, cursor

    def _values(self, p: Policy) -> dict[str, Any]:
        return {
            "id": p.id,
            "product_id": p.product_id,
            "name": p.name,
            "max_uses": p.max_uses,
            "max_machines": p.max_machines,
            "max_cores": p.max_cores,
            "floating": p.floating,
            "strict": p.strict,
            "overage_strategy": p.overage_strategy.value,
            "protected": p.protected,
            "duration": p.duration,
            "heartbeat_duration": p.heartbeat_duration,
            "expiration_basis": p.expiration_basis.value,
            "require_heartbeat": p.require_heartbeat,
            "heartbeat_cull_strategy": p.heartbeat_cull_strategy,
            "heartbeat_resurrection_strategy": p.heartbeat_resurrection_strategy,
            "heartbeat_basis": p.heartbeat_basis,
            "expiration_strategy": p.expiration_strategy,
            "require_check_in": p.require_check_in,
            "check_in_interval": p.check_in_interval,
            "check_in_interval_count": p.check_in_interval_count,
            "scheme": p.scheme,
            "metadata": self._sql.json(p.metadata),
            "created": self._sql.ts(p.created),
            "updated": self._sql.ts(p.updated),
            "usage_period": _rule_json(p.usage_period),
        }

    def _policies(self, statement: str, params: dict[str, Any]) -> list[Policy]:
        self._cursor.execute(statement, params)
        return [_policy(dict(zip(COLUMNS, r, strict=True))) for r in self._cursor.fetchall()]

    def add(self, policy: Policy) -> None:
        self._cursor.execute(self._st.insert, self._values(policy))

    def get(self, policy_id: str) -> Policy | None:
        found = self._policies(self._st.get, {"id": policy_id})
        return found[0] if found else None

    def list(self, *, offset: int, limit: int, product_id: str | None) -> tuple[list[Policy], int]:
        given = product_id is not None
        params = {"product_id": product_id, "offset": offset, "limit": limit}
        items = self._policies(self._st.page[given], params)
        self._cursor.execute(self._st.count[given], params)
        return items, total(self._cursor)

    def update(self, policy: Policy) -> None:
        self._cursor.execute(self._st.update, self._values(policy))

    def delete(self, policy_id: str) -> None:
        self._cursor.execute(self._st.delete, {"id": policy_id})
