"""SQLite stores left at an old schema revision, with a license in them, for the tests that
upgrade them (migrations must keep and fix up the rows a deployed bridge already holds)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from bridge.store.engine import make_engine
from bridge.store.migrate import upgrade

OLD_KEY = "OLD-KEY-1"


def store_at(path: Path, revision: str) -> Engine:
    """A new SQLite file at ``path`` migrated up to ``revision`` only."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, revision)
    return engine


def store_with_a_license(path: Path, revision: str, *, uses: int = 0) -> Engine:
    """``store_at`` holding product ``p``, its policy ``q`` and license ``l`` (key ``OLD_KEY``,
    ``uses``), written with the columns every revision from 0006 on has."""
    engine = store_at(path, revision)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO products (id, name, metadata, created, updated) "
                "VALUES ('p', 'P', '{}', '2026-01-01', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO policies (id, product_id, name, floating, strict, overage_strategy,"
                " protected, expiration_basis, metadata, created, updated) VALUES ('q', 'p', 'Q',"
                " 0, 0, 'NO_OVERAGE', 0, 'FROM_CREATION', '{}', '2026-01-01', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO licenses (id, key, policy_id, uses, protected, suspended, metadata,"
                " created, updated) VALUES ('l', :key, 'q', :uses, 0, 0, '{}', '2026-01-01',"
                " '2026-01-01')"
            ),
            {"key": OLD_KEY, "uses": uses},
        )
    return engine
