"""kill -9 of ``serve`` and of ``worker`` at random moments under concurrent load, with and
without Idempotency-Keys, then a restart: nothing accepted is lost, each counter equals its
ledger, and each platform holds every ledger entry exactly once."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.reliability.harness import (
    ROUNDS,
    Figures,
    Load,
    Process,
    audit,
    base_env,
    make_licenses,
    platforms,
    running,
    sqlite_settings,
    wait_drained,
)


def test_serve_killed_at_random_moments_on_sqlite(tmp_path: Path) -> None:
    """One ``serve`` (API and relay) on a SQLite file, SIGKILLed three times while keyed and
    unkeyed clients increment, restarted on the same port each time."""
    rng = random.Random()
    with platforms() as fakes:
        settings = {**sqlite_settings(tmp_path), **fakes.settings()}
        serve = Process("serve", base_env(settings), tmp_path / "serve.log")
        with running(serve):
            licenses = make_licenses(serve.url, 10)
            keyed = Load(lambda: [serve.url], licenses, threads=4, keys=True).start()
            unkeyed = Load(lambda: [serve.url], licenses, threads=2, keys=False).start()
            for _ in range(ROUNDS):
                keyed.wait_accepted(rng.randint(20, 60))
                time.sleep(rng.random() * 0.3)  # a random moment, mid-request or mid-batch
                serve.kill9()
                time.sleep(rng.random() * 0.5)
                serve.start()
            keyed.wait_accepted(50)
            keyed.stop()
            unkeyed.stop()
            wait_drained(settings["BRIDGE_DATABASE_URL"])
        figures = Figures(
            "kill -9 serve (SQLite)",
            f"{keyed.threads} keyed + {unkeyed.threads} unkeyed client threads",
            f"{serve.kills} SIGKILLs of serve",
        )
        audit(
            figures,
            settings["BRIDGE_DATABASE_URL"],
            [keyed, unkeyed],
            fakes,
            tmp_path / "usage.ndjson",
        )


def test_serve_and_worker_killed_at_random_moments_on_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    """``serve`` and a ``worker`` on PostgreSQL (both relay), one of them SIGKILLed at random
    each round while keyed and unkeyed clients increment, then restarted."""
    rng = random.Random()
    with platforms() as fakes:
        settings = {
            "BRIDGE_DATABASE_URL": pg_url,
            "BRIDGE_SINKS__FILE__ENABLED": "false",
            "BRIDGE_SCHEDULER__ENABLED": "false",
            **fakes.settings(),
        }
        serve = Process("serve", base_env(settings), tmp_path / "serve.log")
        worker = Process("worker", base_env(settings), tmp_path / "worker.log")
        with running(serve, worker):
            licenses = make_licenses(serve.url, 10)
            keyed = Load(lambda: [serve.url], licenses, threads=4, keys=True).start()
            unkeyed = Load(lambda: [serve.url], licenses, threads=2, keys=False).start()
            for n in range(ROUNDS):
                keyed.wait_accepted(rng.randint(20, 60))
                time.sleep(rng.random() * 0.3)
                victim = serve if n % 2 == 0 else worker
                victim.kill9()
                time.sleep(rng.random() * 0.5)
                victim.start()
            keyed.wait_accepted(50)
            keyed.stop()
            unkeyed.stop()
            wait_drained(pg_url)
        figures = Figures(
            "kill -9 serve and worker (PostgreSQL)",
            f"{keyed.threads} keyed + {unkeyed.threads} unkeyed client threads",
            f"{serve.kills} SIGKILLs of serve, {worker.kills} of worker",
        )
        audit(figures, pg_url, [keyed, unkeyed], fakes)
