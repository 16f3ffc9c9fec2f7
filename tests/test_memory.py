"""Memory bounds: SQLite's page cache is a budget for the whole pool, and the processes bound
glibc's malloc arenas."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from bridge.observability.memory import bound_arenas
from bridge.store.engine import SQLITE_POOL_SIZE, make_engine


def _cache_kib(path: Path, **kwargs: int) -> int:
    engine = make_engine(f"sqlite:///{path}", **kwargs)
    try:
        with engine.connect() as conn:
            return -int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
    finally:
        engine.dispose()


def test_the_sqlite_cache_budget_is_shared_by_the_pool(tmp_path: Path) -> None:
    """Each connection caches its share of ``sqlite_cache_mib`` (never under 2 MiB), so the
    pool's 40 connections stay within the budget."""
    connections = 2 * SQLITE_POOL_SIZE
    assert _cache_kib(tmp_path / "a.db") * connections <= 256 * 1024
    assert _cache_kib(tmp_path / "b.db", sqlite_cache_mib=1280) == 32 * 1024
    assert _cache_kib(tmp_path / "c.db", sqlite_cache_mib=16) == 2048


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_arenas_are_bounded_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc accepts the bound; with ``MALLOC_ARENA_MAX`` set, glibc already applied that."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert bound_arenas(2) is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert bound_arenas(2) is True
