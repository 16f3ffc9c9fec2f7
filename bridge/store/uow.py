"""The SQL unit of work: one connection, one transaction, rolled back unless committed.

Database errors leave it as domain errors (``bridge.store.errors``).
"""

from __future__ import annotations

from threading import Lock
from types import TracebackType
from typing import Self

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, RootTransaction

from bridge.domain.webhooks import SubjectMapper
from bridge.store.engine import writer_lock
from bridge.store.errors import raise_translated
from bridge.store.hotpath import HotPath
from bridge.store.periods import CursorPeriods, PeriodSql
from bridge.store.reconcile import SqlReconciliation
from bridge.store.repositories import (
    SqlIdempotencyKeys,
    SqlLedger,
    SqlLicenses,
    SqlMachines,
    SqlOutbox,
    SqlPolicies,
    SqlProducts,
    SqlTokens,
)
from bridge.store.webhooks import SqlSubjectIndex, SqlWebhookInbox, SqlWebhookLicenses


class SqlUnitOfWork:
    products: SqlProducts
    policies: SqlPolicies
    licenses: SqlLicenses
    machines: SqlMachines
    tokens: SqlTokens
    ledger: SqlLedger
    idempotency_keys: SqlIdempotencyKeys
    outbox: SqlOutbox
    periods: CursorPeriods
    reconciliation: SqlReconciliation
    webhooks: SqlWebhookInbox
    webhook_licenses: SqlWebhookLicenses

    def __init__(
        self,
        engine: Engine,
        hot: HotPath,
        *,
        write: bool = False,
        writer: Lock | None = None,
        subjects: SubjectMapper | None = None,
    ) -> None:
        self._subjects = subjects
        self._engine = engine
        self._dbapi = engine.dialect.dbapi
        self._hot = hot
        self._write = write
        self._writer = writer
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None

    def __enter__(self) -> Self:
        if self._writer is not None:
            self._writer.acquire()
        try:
            conn = self._engine.connect()
            if self._write:
                conn = conn.execution_options(bridge_write=True)
            self._tx = conn.begin()
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        except BaseException as exc:
            self._release()
            raise_translated(exc, self._dbapi)
            raise
        self._conn = conn
        self.products = SqlProducts(conn)
        self.policies = SqlPolicies(conn)
        index = SqlSubjectIndex(conn, self._subjects)
        self.licenses = SqlLicenses(conn, self._hot, cursor, index)
        self.machines = SqlMachines(conn)
        self.tokens = SqlTokens(conn, self._hot, cursor)
        self.ledger = SqlLedger(conn)
        self.idempotency_keys = SqlIdempotencyKeys(conn)
        self.outbox = SqlOutbox(conn, self._hot, cursor)
        self.periods = CursorPeriods(PeriodSql(self._hot), cursor)
        self.reconciliation = SqlReconciliation(conn)
        self.webhooks = SqlWebhookInbox(conn)
        self.webhook_licenses = SqlWebhookLicenses(conn, index)
        return self

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

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
        assert self._conn is not None
        assert self._tx is not None
        try:
            if self._tx.is_active:
                self._tx.rollback()
        finally:
            self._conn.close()
            self._release()
        if exc is not None:
            raise_translated(exc, self._dbapi)


class SqlUnitOfWorkFactory:
    def __init__(self, engine: Engine, subjects: SubjectMapper | None = None) -> None:
        self.engine = engine
        self._subjects = subjects  # keeps webhook_subjects current as licenses are written
        self._hot = HotPath(engine.dialect.name)
        self._writer = writer_lock(engine)

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        writer = self._writer if write else None
        return SqlUnitOfWork(
            self.engine, self._hot, write=write, writer=writer, subjects=self._subjects
        )
