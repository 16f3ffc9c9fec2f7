"""Alembic migrations create exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import bridge.store.tables  # noqa: F401  (registers the tables)
from bridge.store.engine import make_engine
from bridge.store.migrate import upgrade


def test_migrations_match_the_models(db_url: str) -> None:
    """After upgrade to head, autogenerate finds nothing to change (no drift)."""
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(sqlite_url: str) -> None:
    """Running the upgrade twice (every serve does) is harmless."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    engine.dispose()
    assert version == "0003_machines"
