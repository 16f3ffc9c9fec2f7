"""Database errors into domain errors, in one place for the unit of work.

A unique-key race or a deadlock becomes ``StoreConflict`` (the use case may retry); a value the
store refuses (out of a column's range, text it cannot encode, a NOT NULL, foreign-key or check
constraint) is bad input: ``ValueInvalid`` or ``StringInvalid``, a 4xx; an unreachable, locked
or otherwise failing database, or a pool with no connection free in time, becomes
``ServiceUnavailable`` (503, safe to retry with the same
Idempotency-Key). Both SQLAlchemy's wrappers and the driver's own errors are recognised, since
the cursor-level modules talk to the driver directly. The details never quote the statement or its
parameters (a license key may be among them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bridge.domain.errors import ServiceUnavailable, StringInvalid, ValueInvalid
from bridge.domain.ports import StoreConflict

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race and
# was rolled back whole, so running it again is safe.
_RETRYABLE_STATES = frozenset({"40P01", "40001"})
_UNIQUE_STATE = "23505"
_SQLITE_UNIQUE = ("UNIQUE constraint failed", "PRIMARY KEY")


def _is_unique_violation(exc: BaseException, state: str | None) -> bool:
    if state is not None:
        return state == _UNIQUE_STATE
    return any(marker in str(exc) for marker in _SQLITE_UNIQUE)


def _constraint(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    name = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if name is None:  # SQLite names the columns, never the values
        return str(orig).partition(":")[2].strip() or "?"
    return str(name)


# SQLite's answers when its file system fails it, in the words an operator acts on.
_SQLITE_CAUSES = (
    ("disk is full", "the database's disk is full"),
    ("readonly database", "the database file is read-only"),
    ("unable to open database file", "the database file cannot be opened (or created)"),
    ("disk I/O error", "the database's disk failed to read or write"),
)


def unavailable(
    exc: BaseException, advice: str = "; retry with the same Idempotency-Key"
) -> ServiceUnavailable:
    """The 503 for a database error: what is wrong where SQLite says so (a full or read-only
    disk), else the generic detail (PostgreSQL's text may quote values, so it is not shown)."""
    text = str(getattr(exc, "orig", exc))
    for marker, cause in _SQLITE_CAUSES:
        if marker in text:
            return ServiceUnavailable(cause + advice)
    return ServiceUnavailable() if advice else ServiceUnavailable("the database is unreachable")


def raise_translated(exc: BaseException, dbapi: Any) -> None:
    """Raise the domain error for ``exc`` (chained), or return if it is no database error."""
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(exc, IntegrityError | dbapi.IntegrityError):
        # Not chained: PostgreSQL's DETAIL quotes the offending value (a license key, say),
        # and a chained error would carry it into the log of an unexpected error.
        constraint = _constraint(exc)
        if _is_unique_violation(exc, state):
            raise StoreConflict(f"unique constraint {constraint} violated") from None
        raise ValueInvalid("a value breaks a constraint of the store") from None
    if isinstance(exc, UnicodeEncodeError):
        raise StringInvalid from exc
    if isinstance(exc, OverflowError | DataError | dbapi.DataError):
        raise ValueInvalid from exc
    if state in _RETRYABLE_STATES:
        raise StoreConflict(str(exc)) from exc
    if isinstance(exc, OperationalError | dbapi.Error):
        raise unavailable(exc) from exc
    if isinstance(exc, PoolTimeout):  # every pooled connection busy for db_pool_timeout_s
        raise ServiceUnavailable("no database connection was free in time; retry") from exc
