"""The SQL unit of work, the store's one transaction manager.

One pooled connection, one transaction, rolled back unless committed. It owns:

- the writer lock: on SQLite a process's writers queue on one in-process lock
  (``bridge.store.engine.writer_lock``), and a write transaction starts with
  ``BEGIN IMMEDIATE`` (the engine's ``begin`` hook reads the ``bridge_write`` option set here);
- savepoints, for the changes a ``BatchWriter`` transaction applies one by one;
- error translation: database errors leave it as domain errors (``bridge.store.errors``);
- invalidation: a connection broken under a driver call is dropped from the pool, not reused.

The usage hot path (``bridge.domain.ports.UsageUnitOfWork``) is a narrower Protocol view of
this same class: ``factory.usage()`` is a write unit of work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from threading import Lock
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, RootTransaction

from bridge.store.catalog import SqlPolicies, SqlProducts
from bridge.store.engine import writer_lock
from bridge.store.errors import raise_translated
from bridge.store.idempotency import IdempotencyStatements, SqlIdempotency
from bridge.store.ledger import LedgerStatements, SqlLedger
from bridge.store.licenses import LicenseStatements, SqlLicenses
from bridge.store.machines import SqlMachines
from bridge.store.outbox import OutboxStatements, SqlOutbox
from bridge.store.periods import PeriodSql, SqlPeriods
from bridge.store.reconcile import SqlReconciliation
from bridge.store.sql import Sql
from bridge.store.tokens import SqlTokens, TokenStatements


class Statements:
    """Every cursor-level module's statements in the engine's dialect, built once."""

    def __init__(self, dialect: str) -> None:
        self.sql = Sql(dialect)
        self.licenses = LicenseStatements(self.sql)
        self.ledger = LedgerStatements(self.sql)
        self.outbox = OutboxStatements(self.sql)
        self.idempotency = IdempotencyStatements(self.sql)
        self.tokens = TokenStatements(self.sql)
        self.periods = PeriodSql(self.sql)


class SqlUnitOfWork:
    products: SqlProducts
    policies: SqlPolicies
    licenses: SqlLicenses
    machines: SqlMachines
    tokens: SqlTokens
    ledger: SqlLedger
    idempotency: SqlIdempotency
    outbox: SqlOutbox
    periods: SqlPeriods
    reconciliation: SqlReconciliation

    def __init__(
        self, engine: Engine, st: Statements, *, write: bool = False, writer: Lock | None = None
    ) -> None:
        self._engine = engine
        self._dbapi: Any = engine.dialect.dbapi
        self._st = st
        self._write = write
        self._writer = writer
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None

    def __enter__(self) -> Self:
        if self._writer is not None:
            self._writer.acquire()
        try:
            conn = self._engine.connect()
            self._conn = conn
            if self._write:
                conn.execution_options(bridge_write=True)
            self._tx = conn.begin()
            cursor = self._st.sql.cursor(conn.connection.driver_connection)
        except BaseException as exc:
            self._close(broken=isinstance(exc, self._dbapi.Error))
            raise_translated(exc, self._dbapi)
            raise
        self._cursor = cursor
        st = self._st
        self.products = SqlProducts(conn)
        self.policies = SqlPolicies(conn)
        self.licenses = SqlLicenses(st.licenses, cursor)
        self.machines = SqlMachines(conn)
        self.tokens = SqlTokens(st.tokens, cursor)
        self.ledger = SqlLedger(st.ledger, cursor)
        self.idempotency = SqlIdempotency(st.idempotency, cursor)
        self.outbox = SqlOutbox(st.outbox, cursor)
        self.periods = SqlPeriods(st.periods, cursor)
        self.reconciliation = SqlReconciliation(conn, self.outbox)
        return self

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested scope whose writes are undone if the block raises (plain SQL on the cursor:
        a SQLAlchemy nested transaction costs more than the change it wraps)."""
        cursor = self._cursor
        cursor.execute("SAVEPOINT usage_change")
        try:
            yield
        except BaseException as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT usage_change")
            cursor.execute("RELEASE SAVEPOINT usage_change")
            raise_translated(exc, self._dbapi)
            raise
        cursor.execute("RELEASE SAVEPOINT usage_change")

    def commit(self) -> None:
        assert self._tx is not None, "commit() outside the with block"
        try:
            self._tx.commit()
        except Exception as exc:
            raise_translated(exc, self._dbapi)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dbapi = self._dbapi
        # A driver call that failed on the connection itself (not on a statement) leaves it
        # unusable: SQLAlchemy notices that for its own calls, the cursor-level ones here.
        broken = isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError)
        if not broken and self._tx is not None and self._tx.is_active:
            try:
                self._tx.rollback()
            except Exception:
                broken = True
        self._close(broken=broken)
        if exc is not None:
            raise_translated(exc, dbapi)

    def _close(self, *, broken: bool) -> None:
        try:
            if self._conn is not None:
                if broken:
                    self._conn.invalidate()
                self._conn.close()
        finally:
            self._conn = None
            if self._writer is not None:
                self._writer.release()
                self._writer = None


class SqlUnitOfWorkFactory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._st = Statements(engine.dialect.name)
        self._writer = writer_lock(engine)

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        writer = self._writer if write else None
        return SqlUnitOfWork(self.engine, self._st, write=write, writer=writer)

    def usage(self) -> SqlUnitOfWork:
        """A usage change's unit of work (``bridge.domain.ports.UsageUnitOfWork``): a write."""
        return self(write=True)
