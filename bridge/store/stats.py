"""What ``meterbridge status`` reads of the database itself: the schema's revision, each
table's size and oldest row, and the last reconciliation.

Sizes: SQLite counts (``COUNT(*)`` walks the smallest index: about a second per ten million
rows); PostgreSQL reports its planner's estimate (``pg_class.reltuples``, kept by autovacuum)
instead of scanning, and counts only a table it has never analysed. Oldest rows are read off an
index (the primary key where ids follow time), never by a scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import Connection

from bridge.store.migrate import alembic_config
from bridge.store.sql import read_ts
from bridge.store.tables import (
    idempotency_keys,
    ledger,
    licenses,
    machines,
    outbox,
    periods,
    reconciliations,
    webhook_deliveries,
    webhook_effects,
)


@dataclass(frozen=True, slots=True)
class TableSize:
    name: str
    rows: int
    estimated: bool  # PostgreSQL's estimate, not a count
    oldest: datetime | None  # the oldest row's time, where an index gives it


@dataclass(frozen=True, slots=True)
class LastReconciliation:
    checked_at: datetime | None
    findings: dict[tuple[str, str], int]  # (sink, status): findings of that run


# Each table, with the column that orders it by age (indexed) and its time column.
_TABLES: tuple[tuple[Any, Any, Any], ...] = (
    (licenses, None, None),
    (machines, None, None),
    (ledger, ledger.c.seq, ledger.c.occurred_at),
    (outbox, outbox.c.id, outbox.c.created),
    (periods, periods.c.id, periods.c.closed_at),
    (reconciliations, reconciliations.c.id, reconciliations.c.checked_at),
    (webhook_deliveries, webhook_deliveries.c.received_at, webhook_deliveries.c.received_at),
    (webhook_effects, webhook_effects.c.id, webhook_effects.c.at),
    (idempotency_keys, idempotency_keys.c.created, idempotency_keys.c.created),
)


def schema_revision(engine: Engine) -> tuple[str | None, str | None]:
    """The database's schema revision and this version's head."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision(), head


def table_sizes(engine: Engine) -> list[TableSize]:
    with engine.connect() as conn:
        return [_size(conn, table, order, at) for table, order, at in _TABLES]


def _size(conn: Connection, table: Any, order: Any, at: Any) -> TableSize:
    rows, estimated = None, False
    if conn.dialect.name == "postgresql":
        query = text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:name)")
        found = conn.execute(query, {"name": table.name}).scalar()
        if found is not None and found >= 0:
            rows, estimated = int(found), True
    if rows is None:
        rows = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    oldest = None
    if order is not None and rows:
        oldest = read_ts(conn.execute(select(at).order_by(order).limit(1)).scalar())
    return TableSize(table.name, rows, estimated, oldest)


def last_reconciliation(engine: Engine) -> LastReconciliation:
    """When reconciliation last stored a finding, and the findings of that run (those stored
    in the day before it) by sink and status."""
    with engine.connect() as conn:
        latest = read_ts(conn.execute(select(func.max(reconciliations.c.checked_at))).scalar())
        if latest is None:
            return LastReconciliation(None, {})
        query = (
            select(reconciliations.c.sink, reconciliations.c.status, func.count())
            .where(reconciliations.c.checked_at >= latest - timedelta(days=1))
            .group_by(reconciliations.c.sink, reconciliations.c.status)
        )
        found = {(sink, status): int(n) for sink, status, n in conn.execute(query)}
    return LastReconciliation(latest, found)
