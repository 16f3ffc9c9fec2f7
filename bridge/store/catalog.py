"""Products and policies: every statement on their tables, and their row mappers.

SQLAlchemy Core (``bridge.store.tables``): nothing here is on a hot path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.model import ExpirationBasis, OverageStrategy, Policy, Product
from bridge.domain.periods import PeriodRule, rule_from_json
from bridge.store.tables import policies, products


# Products -----------------------------------------------------------------------------------
def _product(row: RowMapping) -> Product:
    return Product(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
    )


def _product_values(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "url": p.url,
        "metadata": p.metadata,
        "created": p.created,
        "updated": p.updated,
    }


class SqlProducts:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, product: Product) -> None:
        self._conn.execute(insert(products).values(_product_values(product)))

    def get(self, product_id: str) -> Product | None:
        row = self._conn.execute(select(products).where(products.c.id == product_id)).mappings()
        found = row.first()
        return _product(found) if found else None

    def list(self, *, offset: int, limit: int, only: str | None) -> tuple[list[Product], int]:
        where = products.c.id == only if only is not None else literal(True)
        query = select(products).where(where).order_by(products.c.created, products.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        total = self._conn.execute(select(func.count()).select_from(products).where(where))
        return [_product(r) for r in rows], total.scalar_one()

    def update(self, product: Product) -> None:
        values = _product_values(product)
        self._conn.execute(update(products).where(products.c.id == product.id).values(values))

    def delete(self, product_id: str) -> None:
        self._conn.execute(delete(products).where(products.c.id == product_id))

    def has_policies(self, product_id: str) -> bool:
        query = select(exists().where(policies.c.product_id == product_id))
        return bool(self._conn.execute(query).scalar_one())


# Policies -----------------------------------------------------------------------------------
def _policy(row: RowMapping) -> Policy:
    return Policy(
        id=row["id"],
        product_id=row["product_id"],
        name=row["name"],
        max_uses=row["max_uses"],
        max_machines=row["max_machines"],
        max_cores=row["max_cores"],
        floating=row["floating"],
        strict=row["strict"],
        overage_strategy=OverageStrategy(row["overage_strategy"]),
        protected=row["protected"],
        duration=row["duration"],
        expiration_basis=ExpirationBasis(row["expiration_basis"]),
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
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


def _policy_values(p: Policy) -> dict[str, Any]:
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
        "metadata": p.metadata,
        "created": p.created,
        "updated": p.updated,
        "usage_period": _rule_json(p.usage_period),
    }


def _rule_json(rule: PeriodRule | None) -> str | None:
    return rule.to_json() if rule is not None else None


class SqlPolicies:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, policy: Policy) -> None:
        self._conn.execute(insert(policies).values(_policy_values(policy)))

    def get(self, policy_id: str) -> Policy | None:
        found = (
            self._conn.execute(select(policies).where(policies.c.id == policy_id))
            .mappings()
            .first()
        )
        return _policy(found) if found else None

    def list(self, *, offset: int, limit: int, product_id: str | None) -> tuple[list[Policy], int]:
        where = policies.c.product_id == product_id if product_id is not None else literal(True)
        query = select(policies).where(where).order_by(policies.c.created, policies.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        total = self._conn.execute(select(func.count()).select_from(policies).where(where))
        return [_policy(r) for r in rows], total.scalar_one()

    def update(self, policy: Policy) -> None:
        values = _policy_values(policy)
        self._conn.execute(update(policies).where(policies.c.id == policy.id).values(values))

    def delete(self, policy_id: str) -> None:
        self._conn.execute(delete(policies).where(policies.c.id == policy_id))
