"""Engines for the two supported databases, tuned for the write path.

SQLite runs in WAL mode with ``synchronous=FULL`` (an accepted change survives power loss);
the unit of work (``bridge.store.uow``) starts its write transactions with ``BEGIN IMMEDIATE``
so that writers queue on SQLite's lock through the busy timeout instead of failing when a read
snapshot cannot be upgraded.
"""

from __future__ import annotations

from threading import Lock
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_POOL_SIZE = 20  # and as many again in overflow

_writer_locks: WeakKeyDictionary[Engine, Lock] = WeakKeyDictionary()


def writer_lock(engine: Engine) -> Lock | None:
    """The lock this process's SQLite writers queue on (None on PostgreSQL).

    SQLite has one writer at a time. Queueing a process's writers on a lock is fair and
    immediate, where SQLite's busy handler sleeps and retries (p99 of seconds under load); other
    processes on the same file still queue through the busy timeout.
    """
    if engine.dialect.name != "sqlite":
        return None
    return _writer_locks.setdefault(engine, Lock())


def make_engine(
    url: str, *, pool_size: int = 10, pool_timeout_s: float = 10.0, sqlite_cache_mib: int = 256
) -> Engine:
    """``sqlite_cache_mib``: SQLite's page cache for the whole pool, shared out per connection
    (each connection caches pages on its own, and keeps them while it is pooled)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, pool_timeout_s, sqlite_cache_mib)
    # No pool_pre_ping: it costs a round trip per checkout. A connection broken by a server
    # restart fails its statement (503, retry), and SQLAlchemy then invalidates the pool.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # A request that finds no free connection this long is answered 503 (retry), rather
        # than queueing behind slow queries for as long as its client waits.
        pool_timeout=pool_timeout_s,
        pool_recycle=1800,
        hide_parameters=True,  # errors never quote parameters (license keys, token digests)
        # The same bound on waiting for a row lock: a statement blocked longer (another client
        # holding licenses locked) fails and is answered 503 with Retry-After, instead of a
        # request queueing behind the group-commit writer for as long as its client waits.
        connect_args={"options": f"-c lock_timeout={max(1, round(pool_timeout_s * 1000))}"},
    )


def _sqlite_engine(url: str, pool_timeout_s: float, cache_mib: int) -> Engine:
    # Per connection, in KiB (a negative cache_size), never below SQLite's default of 2 MiB.
    cache_kib = max(2048, cache_mib * 1024 // (2 * SQLITE_POOL_SIZE))
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        pool_size=SQLITE_POOL_SIZE,
        max_overflow=SQLITE_POOL_SIZE,
        pool_timeout=pool_timeout_s,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # The period job's batches go through temporary tables: keep them off the disk.
        cursor.execute("PRAGMA temp_store=MEMORY")
        # The pool's share of the cache budget (SQLite's default is 2 MiB): index updates on a
        # store of millions of licenses stop re-reading interior pages. Allocated as used, and
        # kept: 32 MiB each grew a pool of 40 towards 1.3 GB, hence a budget for the pool.
        cursor.execute(f"PRAGMA cache_size=-{cache_kib}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The unit of work begins its own transactions (BEGIN IMMEDIATE for writes); this is
        # for every other connection (migrations, job locks, readiness, tests), which ask for
        # a write transaction with the ``bridge_write`` execution option.
        options = conn.get_execution_options()
        if options.get("bridge_begun"):
            return
        # Straight to the driver: exec_driver_sql would cost more than the BEGIN itself.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if options.get("bridge_write") else "BEGIN DEFERRED"
        )

    return engine


def ping(engine: Engine) -> bool:
    """Whether the database answers (``/readyz``)."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception:  # any failure means not ready
        return False
    return True
