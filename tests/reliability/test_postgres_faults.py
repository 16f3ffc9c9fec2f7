"""PostgreSQL going away under load, and a pool exhausted by slow queries: the API answers 503
with ``Retry-After`` (never a 500), loses nothing it accepted, and recovers by itself."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.reliability.harness import (
    ROUNDS,
    Figures,
    Load,
    Process,
    audit,
    base_env,
    make_licenses,
    platforms,
    relay_settings,
    running,
    wait_drained,
    wait_for,
)
from tests.reliability.private_pg import SKIP, PrivatePostgres, bindir


def _readyz(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_postgresql_restarted_under_load(tmp_path: Path) -> None:
    """A private PostgreSQL is stopped twice while clients increment through ``serve``: once
    cleanly (``pg_ctl stop -m fast``, every session ended) and once as a crash (``-m
    immediate``). While it is away every answer is 503 with ``Retry-After`` and ``/readyz``
    says 503; once it is back the same processes serve again without a restart."""
    if bindir() is None:
        pytest.skip(SKIP)
    with PrivatePostgres() as pg, platforms() as fakes:
        settings = {
            "BRIDGE_DATABASE_URL": pg.url,
            "BRIDGE_SINKS__FILE__ENABLED": "false",
            "BRIDGE_SCHEDULER__ENABLED": "false",
            **fakes.settings(),
        }
        serve = Process("serve", base_env(settings), tmp_path / "serve.log")
        with running(serve):
            licenses = make_licenses(serve.url, 10)
            keyed = Load(lambda: [serve.url], licenses, threads=4, keys=True).start()
            unkeyed = Load(lambda: [serve.url], licenses, threads=2, keys=False).start()
            outages = []
            for mode in ["fast", "immediate"] * max(1, ROUNDS // 2):
                keyed.wait_accepted(50)
                before = keyed.statuses[503] + unkeyed.statuses[503]
                pg.stop(mode)
                wait_for(
                    lambda b=before: keyed.statuses[503] + unkeyed.statuses[503] > b + 20, "503s"
                )
                assert _readyz(serve.url) == 503
                pg.start()
                outages.append(keyed.statuses[503] + unkeyed.statuses[503] - before)
                keyed.wait_accepted(50)  # recovered by itself
                assert _readyz(serve.url) == 200
            keyed.stop()
            unkeyed.stop()
            wait_drained(pg.url)
        figures = Figures(
            "PostgreSQL restarted under load",
            f"{keyed.threads} keyed + {unkeyed.threads} unkeyed client threads",
            f"{len(outages)} stops, alternately pg_ctl stop -m fast and -m immediate (a crash), "
            "each then started again",
            notes=f"503 with Retry-After while away: {outages}; 500s: 0",
        )
        audit(figures, pg.url, [keyed, unkeyed], fakes)


def test_a_pool_exhausted_by_slow_queries(pg_url: str, tmp_path: Path) -> None:
    """Another client holds the licenses' rows locked for longer than a request may wait for
    a connection: every increment then blocks in the database, ``serve``'s small pool runs
    dry, and the requests past it get 503 with ``Retry-After`` (never a 500 and never a hang);
    once the lock is gone everything is served again, and nothing accepted is lost."""
    settings = {
        "BRIDGE_DATABASE_URL": pg_url,
        "BRIDGE_DB_POOL_SIZE": "2",  # at most 4 connections (and as many in overflow)
        "BRIDGE_DB_POOL_TIMEOUT_S": "1",
        "BRIDGE_SCHEDULER__ENABLED": "false",
        "BRIDGE_SINKS__FILE__PATH": str(tmp_path / "usage.ndjson"),
        **relay_settings(),
    }
    serve = Process("serve", base_env(settings), tmp_path / "serve.log")
    with running(serve):
        licenses = make_licenses(serve.url, 4)
        keyed = Load(lambda: [serve.url], licenses, threads=12, keys=True).start()
        keyed.wait_accepted(50)
        engine = create_engine(pg_url)
        locked = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with engine.begin() as conn:
                # A table lock, not row locks one by one: taking rows in turn while the bridge's
                # batches hold some of them deadlocks; this waits for those batches, then every
                # write to a license waits behind it.
                conn.execute(text("LOCK TABLE licenses IN EXCLUSIVE MODE"))
                locked.set()
                release.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert locked.wait(30)
            before = keyed.statuses[503]
            wait_for(lambda: keyed.statuses[503] > before + 10, "503s from the exhausted pool")
        finally:  # a failure must not leave the lock held nor a connection open for GC to find
            release.set()
            holder.join(30)
            engine.dispose()
        keyed.wait_accepted(50)
        keyed.stop()
        wait_drained(pg_url)
    figures = Figures(
        "a pool exhausted by slow queries",
        f"{keyed.threads} keyed client threads, pool of 2 + 2",
        "the licenses table locked against writes by another client for several seconds",
        notes=f"503 with Retry-After while exhausted: {keyed.statuses[503] - before}; 500s: 0",
    )
    audit(figures, pg_url, [keyed], None, tmp_path / "usage.ndjson")
