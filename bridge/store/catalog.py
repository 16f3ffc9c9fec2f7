"""Products: every statement on their table, and the row mapper.

SQLAlchemy Core (``bridge.store.tables``): nothing here is on a hot path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.model import Product
from bridge.store.tables import policies, products


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
