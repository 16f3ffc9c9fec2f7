"""Database errors into domain errors, in one place for the unit of work.

A unique-key race or a deadlock becomes ``StoreConflict`` (the use case may retry); an
unreachable, locked or otherwise failing database becomes ``ServiceUnavailable`` (503, safe to
retry with the same Idempotency-Key). Both SQLAlchemy's wrappers and the driver's own errors
are recognised, since the cursor-level modules talk to the driver directly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from bridge.domain.errors import ServiceUnavailable
from bridge.domain.ports import StoreConflict

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race and
# was rolled back whole, so running it again is safe.
_RETRYABLE_STATES = frozenset({"40P01", "40001"})


def raise_translated(exc: BaseException, dbapi: Any) -> None:
    """Raise the domain error for ``exc`` (chained), or return if it is no database error."""
    if isinstance(exc, IntegrityError | dbapi.IntegrityError):
        raise StoreConflict(str(exc)) from exc
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    if state in _RETRYABLE_STATES:
        raise StoreConflict(str(exc)) from exc
    if isinstance(exc, OperationalError | dbapi.Error):
        raise ServiceUnavailable from exc
