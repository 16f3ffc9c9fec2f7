"""The SQL unit of work, the store's one transaction manager.

One pooled connection, one transaction, rolled back unless committed. It owns:

- the writer lock: on SQLite a process's writers queue on one in-process lock
  (``bridge.store.engine.writer_lock``), and a write transaction starts with
  ``BEGIN IMMEDIATE`` (never upgraded from a read, so writers queue instead of failing);
- savepoints, for the changes a ``BatchWriter`` transaction applies one by one;
- error translation: database errors leave it as domain errors (``bridge.store.errors``);
- invalidation: a connection broken under a driver call is dropped from the pool, not reused.

The usage hot path (``bridge.domain.ports.UsageUnitOfWork``) is a narrower Protocol view of
this same class: ``factory.usage()`` is a write unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from threading import Lock
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import PoolProxiedConnection

from bridge.domain.webhooks import SubjectMapper
from bridge.store.catalog import SqlProducts
from bridge.store.engine import writer_lock
from bridge.store.errors import raise_translated
from bridge.store.idempotency import IdempotencyStatements, SqlIdempotency
from bridge.store.keygen import SqlKeygen
from bridge.store.ledger import LedgerStatements, SqlLedger
from bridge.store.licenses import LicenseStatements, SqlLicenses
from bridge.store.machines import MachineStatements, SqlMachines
from bridge.store.outbox import OutboxStatements, SqlOutbox
from bridge.store.periods import PeriodSql, SqlPeriods
from bridge.store.policies import PolicyStatements, SqlPolicies
from bridge.store.reconcile import SqlReconciliation
from bridge.store.records import RecordStatements, SqlRecords
from bridge.store.sql import Sql
from bridge.store.tokens import SqlTokens, TokenStatements
from bridge.store.webhooks import SqlSubjectIndex, SqlWebhookInbox, SqlWebhookLicenses


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
        self.records = RecordStatements(self.sql)
        self.machines = MachineStatements(self.sql)
        self.policies = PolicyStatements(self.sql)


class SqlUnitOfWork:
    """One transaction on one pooled connection, begun and ended here on the driver
    connection. The cursor-level repositories share the driver cursor; the Core ones
    (products, reconciliation, the webhook and Keygen tables) share a SQLAlchemy
    ``Connection`` wrapped around the same connection when first asked for: a usage change or
    a machine activation never builds one."""

    licenses: SqlLicenses
    tokens: SqlTokens
    ledger: SqlLedger
    idempotency: SqlIdempotency
    outbox: SqlOutbox
    periods: SqlPeriods
    records: SqlRecords
    machines: SqlMachines
    policies: SqlPolicies

    def __init__(
        self,
        engine: Engine,
        st: Statements,
        *,
        write: bool = False,
        writer: Lock | None = None,
        subjects: SubjectMapper | None = None,
        revoked: Callable[[], None] | None = None,
    ) -> None:
        self._subjects = subjects
        self._on_revoked = revoked  # called after a commit that revoked tokens
        self._revoked = False
        self._engine = engine
        self._dbapi: Any = engine.dialect.dbapi
        self._st = st
        self._write = write
        self._writer = writer
        self._raw: PoolProxiedConnection | None = None
        self._conn: Connection | None = None
        self._core: dict[str, Any] = {}
        self._done = False

    def __enter__(self) -> Self:
        if self._writer is not None:
            self._writer.acquire()
        try:
            self._raw = raw = self._engine.raw_connection()
            cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
            if self._st.sql.sqlite:  # PostgreSQL's driver begins at the first statement
                cursor.execute("BEGIN IMMEDIATE" if self._write else "BEGIN DEFERRED")
        except BaseException as exc:
            self._close(broken=isinstance(exc, self._dbapi.Error))
            raise_translated(exc, self._dbapi)
            raise
        self._cursor = cursor
        st = self._st
        # The webhook subject index is written with each license (only when webhooks are on).
        index = (lambda: self._subject_index) if self._subjects is not None else None
        self.licenses = SqlLicenses(st.licenses, cursor, index)
        self.tokens = SqlTokens(st.tokens, cursor, self._mark_revoked)
        self.ledger = SqlLedger(st.ledger, cursor)
        self.idempotency = SqlIdempotency(st.idempotency, cursor)
        self.outbox = SqlOutbox(st.outbox, cursor)
        self.periods = SqlPeriods(st.periods, cursor)
        self.records = SqlRecords(st.records, cursor)
        self.machines = SqlMachines(st.machines, cursor)
        self.policies = SqlPolicies(st.policies, cursor)
        return self

    def _mark_revoked(self) -> None:
        self._revoked = True

    # The Core repositories --------------------------------------------------------------------
    def _connection(self) -> Connection:
        """SQLAlchemy's ``Connection`` on this unit of work's connection and transaction."""
        if self._conn is None:
            assert self._raw is not None, "a repository outside the with block"
            self._conn = Connection(self._engine, self._raw)
            # The transaction is begun already: the engine's begin hook must not begin another.
            self._conn.execution_options(bridge_begun=True)
        return self._conn

    def _repository(self, name: str, make: Callable[[Connection], Any]) -> Any:
        if name not in self._core:
            self._core[name] = make(self._connection())
        return self._core[name]

    @property
    def products(self) -> SqlProducts:
        return cast(SqlProducts, self._repository("products", SqlProducts))

    @property
    def reconciliation(self) -> SqlReconciliation:
        make = partial(SqlReconciliation, outbox=self.outbox)
        return cast(SqlReconciliation, self._repository("reconciliation", make))

    @property
    def _subject_index(self) -> SqlSubjectIndex:
        make = partial(SqlSubjectIndex, mapper=self._subjects)
        return cast(SqlSubjectIndex, self._repository("subject_index", make))

    @property
    def webhooks(self) -> SqlWebhookInbox:
        return cast(SqlWebhookInbox, self._repository("webhooks", SqlWebhookInbox))

    @property
    def webhook_licenses(self) -> SqlWebhookLicenses:
        index = self._subject_index
        make = partial(SqlWebhookLicenses, index=index)
        return cast(SqlWebhookLicenses, self._repository("webhook_licenses", make))

    @property
    def keygen(self) -> SqlKeygen:
        return cast(SqlKeygen, self._repository("keygen", SqlKeygen))

    # The transaction --------------------------------------------------------------------------
    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested scope whose writes are undone if the block raises.

        On PostgreSQL a scope that succeeds is not released: the next ``SAVEPOINT`` of the same
        name nests inside it and ``ROLLBACK TO`` finds the newest, so a batch of changes saves a
        round trip per change; the commit ends them all. (SQLite releases: a local call.)"""
        cursor = self._cursor
        cursor.execute("SAVEPOINT usage_change")
        try:
            yield
        except BaseException as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT usage_change")
            cursor.execute("RELEASE SAVEPOINT usage_change")
            raise_translated(exc, self._dbapi)
            raise
        if self._st.sql.sqlite:
            cursor.execute("RELEASE SAVEPOINT usage_change")

    @contextmanager
    def writes_together(self) -> Iterator[None]:
        """On PostgreSQL, psycopg's pipeline mode: the statements go without waiting for each
        answer, and the first error is raised when the block ends (inside the caller's
        savepoint, so it is still that change's). SQLite is in process: nothing to save."""
        if self._st.sql.sqlite:
            yield
            return
        assert self._raw is not None, "writes_together() outside the with block"
        with self._raw.driver_connection.pipeline():  # type: ignore[union-attr]
            yield

    def commit(self) -> None:
        assert self._raw is not None, "commit() outside the with block"
        try:
            if self._conn is not None:
                self._conn.commit()  # ends SQLAlchemy's view of the transaction too
            else:
                self._raw.commit()
        except Exception as exc:
            raise_translated(exc, self._dbapi)
            raise
        self._done = True
        if self._revoked and self._on_revoked is not None:
            self._revoked = False
            self._on_revoked()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dbapi = self._dbapi
        # A driver call that failed on the connection itself (not on a statement) leaves it
        # unusable: drop it from the pool instead of rolling back on it.
        broken = isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError) or (
            self._conn is not None and self._conn.invalidated
        )
        if not self._done and not broken:
            try:
                if self._conn is not None:
                    self._conn.rollback()
                elif self._raw is not None:
                    self._raw.rollback()
            except Exception:
                broken = True
        self._close(broken=broken)
        if exc is not None:
            raise_translated(exc, dbapi)

    def _close(self, *, broken: bool) -> None:
        try:
            if self._conn is not None:  # owns the pooled connection now: it checks it in
                if broken and not self._conn.invalidated:
                    self._conn.invalidate()
                self._conn.close()
            elif self._raw is not None:
                if broken:
                    self._raw.invalidate()
                self._raw.close()  # back to the pool
        finally:
            self._raw = self._conn = None
            if self._writer is not None:
                self._writer.release()
                self._writer = None


class SqlUnitOfWorkFactory:
    def __init__(self, engine: Engine, subjects: SubjectMapper | None = None) -> None:
        self.engine = engine
        self._subjects = subjects  # keeps webhook_subjects current as licenses are written
        self._st = Statements(engine.dialect.name)
        self._writer = writer_lock(engine)
        self._revocation_listeners: list[Callable[[], None]] = []

    def on_revocation(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit that removed tokens (in this process)."""
        self._revocation_listeners.append(listener)

    def _revoked(self) -> None:
        for listener in self._revocation_listeners:
            listener()

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        writer = self._writer if write else None
        return SqlUnitOfWork(
            self.engine,
            self._st,
            write=write,
            writer=writer,
            subjects=self._subjects,
            revoked=self._revoked,
        )

    def usage(self) -> SqlUnitOfWork:
        """A usage change's unit of work (``bridge.domain.ports.UsageUnitOfWork``): a write."""
        return self(write=True)
