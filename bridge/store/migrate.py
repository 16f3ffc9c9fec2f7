"""Alembic migrations, applied programmatically, and the schema check of read-only commands.

``upgrade`` (``serve``, ``worker``, ``scheduler``, ``db upgrade`` and the write commands) runs
under a lock, so any number of processes may start at once against one database: on PostgreSQL a
transaction-level advisory lock taken before Alembic reads the version (the others wait, then
find the schema at head and do nothing); on SQLite the write lock itself (``BEGIN IMMEDIATE``
through the busy timeout, and a whole attempt again when a fresh file answers "database is
locked" without waiting). ``ensure_current`` (read-only commands) never migrates: it raises
``SchemaBehind`` or ``SchemaUnknown`` when the database is not at this version's head.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from bridge.domain.errors import SchemaBehind, SchemaUnknown
from bridge.store.engine import SQLITE_BUSY_TIMEOUT_S
from bridge.store.errors import unavailable
from bridge.store.locks import advisory_key

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``, one process at a time."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            _upgrade_once(engine, revision)
            return
        except OperationalError as exc:
            # On a fresh SQLite file, processes opening it while another switches it to WAL or
            # checkpoints it on close can get "database is locked" without SQLite's busy
            # handler waiting. The attempt rolled back whole, so running it again is safe.
            locked = engine.dialect.name == "sqlite" and "database is locked" in str(exc)
            if not locked or time.monotonic() > deadline:
                # A clear one-line error for the command (the store unreachable, full or
                # read-only), not a traceback.
                raise unavailable(exc, advice="") from exc
            time.sleep(0.05)


def _upgrade_once(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Alembic's batch mode rebuilds a SQLite table (create, copy, drop, rename); with
            # foreign keys on, dropping a table that other rows point at is refused (or would
            # cascade). SQLite's documented procedure: keys off outside the transaction, checked
            # before the commit, on again after.
            _driver(conn).execute("PRAGMA foreign_keys=OFF")
        try:
            # bridge_write: SQLite's BEGIN IMMEDIATE, so a second process waits for the first
            # instead of failing to upgrade its read snapshot once the first has created the
            # tables.
            with conn.execution_options(bridge_write=True).begin():
                if not sqlite:
                    # Wait as long as another process takes to migrate (no lock_timeout).
                    conn.execute(text("SET LOCAL lock_timeout = 0"))
                    key = {"k": advisory_key("migrate")}
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), key)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows whose foreign key points nowhere")
        finally:
            if sqlite:
                _driver(conn).execute("PRAGMA foreign_keys=ON")


def _driver(conn: Connection) -> Any:
    """The DBAPI connection: a PRAGMA sent there starts no transaction."""
    return conn.connection.driver_connection


def ensure_current(engine: Engine) -> None:
    """Raise unless the database schema is at this version's head (no migration is run)."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is None or current in known:
        at = f"at revision {current}" if current else "empty"
        raise SchemaBehind(
            f"the database schema is {at}, this version needs {head}: "
            "run `meterbridge db upgrade` (serve, worker and scheduler also migrate)"
        )
    raise SchemaUnknown(
        f"the database schema is at revision {current}, which this version ({head}) does not "
        "know: a newer version has migrated it"
    )


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new revision from the tables (a developer command)."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
