"""The unit of work of a usage change, on a pooled driver connection without SQLAlchemy's
``Connection`` around it (see ``bridge.store.hotpath`` for why).

It holds exactly what ``bridge.domain.ports.UsageUnitOfWork`` names. Driver errors leave it as
domain errors (``bridge.store.errors``); a broken connection is dropped from the pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine

from bridge.domain.model import License, UsageEntry
from bridge.store.engine import writer_lock
from bridge.store.errors import raise_translated
from bridge.store.hotpath import HotPath
from bridge.store.periods import CursorPeriods, PeriodSql


class _Licenses:
    def __init__(self, hot: HotPath, cursor: Any) -> None:
        self._hot, self._cursor = hot, cursor

    def find(self, id_or_key: str) -> License | None:
        return self._hot.find_license(self._cursor, id_or_key)

    def try_add_uses(self, license_id: str, delta: int, now: datetime) -> int | None:
        return self._hot.try_add_uses(self._cursor, license_id, delta, now)

    def lock_uses(self, license_id: str) -> int | None:
        return self._hot.lock_uses(self._cursor, license_id)

    def set_uses(self, license_id: str, uses: int, now: datetime) -> bool:
        return self._hot.set_uses(self._cursor, license_id, uses, now)

    def set_expiry_if_unset(self, license_id: str, expiry: datetime) -> None:
        self._hot.set_expiry_if_unset(self._cursor, license_id, expiry)


class _Ledger:
    def __init__(self, hot: HotPath, cursor: Any) -> None:
        self._hot, self._cursor = hot, cursor

    def add(self, entry: UsageEntry) -> None:
        self._hot.add_entry(self._cursor, entry)


class _Outbox:
    def __init__(self, hot: HotPath, cursor: Any) -> None:
        self._hot, self._cursor = hot, cursor

    def add(self, entry: UsageEntry, sinks: Sequence[str]) -> None:
        self._hot.add_outbox(self._cursor, entry, sinks)


class _Idempotency:
    def __init__(self, hot: HotPath, cursor: Any) -> None:
        self._hot, self._cursor = hot, cursor

    def get(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        return self._hot.get_key(self._cursor, scope, key)

    def claim(self, scope: str, key: str, fingerprint: str, now: datetime) -> None:
        self._hot.claim_key(self._cursor, scope, key, fingerprint, now)

    def record(self, scope: str, key: str, result: dict[str, Any]) -> None:
        self._hot.record_key(self._cursor, scope, key, result)


class UsageUnitOfWork:
    licenses: _Licenses
    ledger: _Ledger
    outbox: _Outbox
    idempotency: _Idempotency
    periods: CursorPeriods

    def __init__(self, factory: UsageUnitOfWorkFactory) -> None:
        self._factory = factory
        self._raw: Any = None
        self._done = False

    def __enter__(self) -> Self:
        f = self._factory
        if f.writer is not None:
            f.writer.acquire()
        try:
            self._raw = f.engine.raw_connection()
            cursor = self._raw.cursor()
            if f.hot.sqlite:
                cursor.execute("BEGIN IMMEDIATE")  # queue on the write lock, never upgrade
        except BaseException as exc:
            self._close(invalidate=isinstance(exc, f.dbapi.Error))
            raise_translated(exc, f.dbapi)
            raise
        self._cursor = cursor
        self.licenses = _Licenses(f.hot, cursor)
        self.ledger = _Ledger(f.hot, cursor)
        self.outbox = _Outbox(f.hot, cursor)
        self.idempotency = _Idempotency(f.hot, cursor)
        self.periods = CursorPeriods(f.periods, cursor)
        return self

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        cursor = self._cursor
        cursor.execute("SAVEPOINT usage_change")
        try:
            yield
        except BaseException as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT usage_change")
            cursor.execute("RELEASE SAVEPOINT usage_change")
            raise_translated(exc, self._factory.dbapi)
            raise
        cursor.execute("RELEASE SAVEPOINT usage_change")

    def commit(self) -> None:
        try:
            self._raw.commit()
        except Exception as exc:
            raise_translated(exc, self._factory.dbapi)
            raise
        self._done = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dbapi = self._factory.dbapi
        broken = isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError)
        if not self._done and not broken:
            try:
                self._raw.rollback()
            except dbapi.Error:
                broken = True
        self._close(invalidate=broken)
        if exc is not None:
            raise_translated(exc, dbapi)

    def _close(self, *, invalidate: bool) -> None:
        try:
            if self._raw is not None:
                if invalidate:
                    self._raw.invalidate()
                else:
                    self._raw.close()  # back to the pool
        finally:
            self._raw = None
            if self._factory.writer is not None:
                self._factory.writer.release()


class UsageUnitOfWorkFactory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hot = HotPath(engine.dialect.name)
        self.periods = PeriodSql(self.hot)
        self.dbapi: Any = engine.dialect.dbapi
        self.writer = writer_lock(engine)

    def __call__(self) -> UsageUnitOfWork:
        return UsageUnitOfWork(self)
