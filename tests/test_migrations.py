"""Alembic migrations create exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import bridge.store.tables  # noqa: F401  (registers the tables)
from bridge.store.engine import make_engine
from bridge.store.migrate import alembic_config, upgrade
from tests.old_stores import store_at, store_with_a_license
from tests.processes import warm_context


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
    engine = store_at(tmp_path / "old.db", "0004")
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


PROCESSES = 4
DEADLINE_S = 60.0


def _start_and_migrate(url: str, barrier: Any, results: Any) -> None:
    """One process starting up: built and imported, it waits for the others, then migrates."""
    try:
        from bridge.bootstrap import build
        from bridge.settings import load_settings

        container = build(load_settings(database_url=url))
        try:
            barrier.wait(DEADLINE_S)
            container.migrate()
        finally:
            container.dispose()
        results.put("ok")
    except Exception as exc:  # report it: the test asserts every process succeeded
        results.put(f"{type(exc).__name__}: {exc}")


def _migrate_at_once(url: str) -> list[str]:
    ctx = warm_context()
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [
        ctx.Process(target=_start_and_migrate, args=(url, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=DEADLINE_S) for _ in processes]
    for process in processes:
        process.join(DEADLINE_S)
    return outcomes


def _at_head(url: str) -> bool:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    finally:
        engine.dispose()
    return [v[0] for v in versions] == [head]


@pytest.fixture
def fresh_pg_url(pg_server_url: str) -> Any:
    """A database of its own on the test server, with no schema at all."""
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    name = f"bridge_fresh_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_processes_starting_at_once_on_a_fresh_postgres_database_all_migrate_it(
    fresh_pg_url: str,
) -> None:
    """Several processes (serve, workers, schedulers) starting together on one empty
    PostgreSQL database all succeed: one migrates, the others wait on the lock and find it done."""
    assert _migrate_at_once(fresh_pg_url) == ["ok"] * PROCESSES
    assert _at_head(fresh_pg_url)


def test_processes_starting_at_once_on_a_fresh_sqlite_file_all_migrate_it(tmp_path: Path) -> None:
    """The same on a new SQLite file: the write lock (BEGIN IMMEDIATE) serializes them."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert _migrate_at_once(url) == ["ok"] * PROCESSES
    assert _at_head(url)


def test_sqlite_upgrade_keeps_rows_of_tables_it_rebuilds(tmp_path: Path) -> None:
    """A SQLite store with licenses under a policy upgrades through the migrations that rebuild
    ``policies`` (Alembic's batch mode drops the old table while licenses point at it): every
    row stays, and foreign keys are enforced again afterwards."""
    engine = store_with_a_license(tmp_path / "old.db", "0006", uses=3)
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, policy_id, uses FROM licenses")).all() == [
            ("l", "q", 3)
        ]
        assert conn.execute(text("SELECT id FROM policies")).scalars().all() == ["q"]
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
