"""The one SQL helper of the cursor-level modules: parameter style, value encodings, rows by name.

The SQL is written once for both databases with ``:name`` parameters; ``Sql.style`` turns it
into psycopg's ``%(name)s``. Values cross the driver in one encoding per database: SQLite stores
naive UTC text (``SQLITE_DATETIME``, also the format ``bridge.store.types.UtcDateTime`` binds
through SQLAlchemy, so both access styles write the same bytes) and JSON as text; PostgreSQL
takes aware datetimes, JSON cast from text and arrays. Cursors return rows as mappings, so
every mapper reads its columns by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

# SQLAlchemy's SQLite DATETIME format, the form every stored time has on SQLite.
SQLITE_DATETIME = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)

_IN_IDS = {True: "IN (SELECT value FROM json_each(:ids))", False: "= ANY(:ids)"}


class Sql:
    """Statements and values for one dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        # ``id IN_IDS`` in a statement: a JSON array on SQLite, an array parameter on PostgreSQL.
        self.in_ids = _IN_IDS[self.sqlite]

    def style(self, sql: str) -> str:
        """``sql`` in the driver's parameter style, with ``IN_IDS`` and ``:name::JSON`` resolved."""
        sql = sql.replace("IN_IDS", self.in_ids)
        if self.sqlite:
            return sql.replace("::JSON", "")
        return _pyformat(sql.replace("::JSON", "::json"))

    # Encodings --------------------------------------------------------------------------------
    def ts(self, value: datetime | None) -> Any:
        if value is None:
            return None
        return sqlite_text(value) if self.sqlite else value

    def json(self, value: Any) -> str:
        return json.dumps(value)

    def ids(self, ids: Sequence[int]) -> Any:
        return json.dumps(list(ids)) if self.sqlite else list(ids)


def one(cursor: Any, names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The next row of ``cursor`` by column name, or None. A statement on the usage path passes
    the ``names`` it selects: psycopg builds its column descriptions anew on every call."""
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip(_names(cursor) if names is None else names, row, strict=True))


def every(cursor: Any) -> list[dict[str, Any]]:
    """The remaining rows of ``cursor``, each by column name."""
    rows = cursor.fetchall()
    if not rows:
        return []
    names = _names(cursor)
    return [dict(zip(names, row, strict=True)) for row in rows]


def total(cursor: Any) -> int:
    """The ``total`` column of a one-row aggregate (``SELECT COUNT(*) AS total ...``)."""
    row = one(cursor)
    assert row is not None, "an aggregate has a row"
    return int(row["total"])


def _names(cursor: Any) -> list[str]:
    return [column[0] for column in cursor.description]


def read_ts(value: Any) -> Any:
    """A stored time (SQLite text, or a datetime) as timezone-aware UTC; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return _sqlite_moment(value)
    moment: datetime = value
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def read_json(value: Any) -> Any:
    """A stored JSON value: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


# Memoized: a period job encodes the same few boundaries for thousands of licenses.
@lru_cache(maxsize=4096)
def sqlite_text(value: datetime) -> str:
    """``value`` in ``SQLITE_DATETIME``, converted to UTC first."""
    v = value.astimezone(UTC)
    return SQLITE_DATETIME % {
        "year": v.year,
        "month": v.month,
        "day": v.day,
        "hour": v.hour,
        "minute": v.minute,
        "second": v.second,
        "microsecond": v.microsecond,
    }


@lru_cache(maxsize=4096)
def _sqlite_moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _pyformat(sql: str) -> str:
    """``:name`` placeholders to psycopg's ``%(name)s`` (the SQL holds no other colon or %)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)
