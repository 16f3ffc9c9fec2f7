"""Alembic migrations create exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import bridge.store.tables  # noqa: F401  (registers the tables)
from bridge.store.engine import make_engine
from bridge.store.migrate import alembic_config, upgrade


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
    script = ScriptDirectory.from_config(alembic_config(engine))
    assert version == script.get_current_head()


def test_the_reason_column_is_filled_from_the_stored_errors(tmp_path: Path) -> None:
    """Migration 0005 gives existing rows their reason: items waiting for a mapping (told apart
    by their error's prefix until then), dead letters past the horizon, other dead letters."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0004")
    rows = [
        ("pending", "MAPPING_MISSING: license x has no metadata 'sub'"),
        ("pending", "lago answered 503: down"),
        ("dead", "retry horizon passed; last error: timeout"),
        ("dead", "PermanentDeliveryError: lago answered 400"),
        ("delivered", None),
    ]
    with engine.begin() as conn:
        for n, (status, error) in enumerate(rows):
            conn.exec_driver_sql(
                "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created,"
                " last_error) VALUES (?, 'lago', ?, 1, '2026-01-01', '2026-01-01', ?)",
                (f"e{n}", status, error),
            )
    upgrade(engine)
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT reason FROM outbox ORDER BY id").scalars().all()
    engine.dispose()
    assert found == ["mapping_missing", None, "horizon_passed", "rejected", None]
