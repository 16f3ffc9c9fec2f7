"""Closing the usage periods of N idle licenses (default 1,000,000), on SQLite and PostgreSQL.

Each license has a monthly period that ended on 2026-02-01 and one increment in it. The store is
seeded with plain SQL (quick), then copied, so both runs below start from the same state:

- **baseline**: the same writes as three set-based SQL statements in one transaction (the
  period records with their ledger totals, the reset entries, the licenses' new periods): the
  database doing the job alone, with no per-license logic. It cannot do what the job does
  (period arithmetic per rule and timezone, several missed periods per license, the guard
  against a concurrent close), so it is a floor, not an alternative.
- **bridge**: ``close_due_periods``, what the scheduler runs, a batch per transaction (on
  PostgreSQL ``--workers`` batches at a time, like ``scheduler.close_workers``).

Both results are checked (one record and one reset entry per license). Prints the time, the
rate, and this process's peak RSS.

    python bench/periods_close.py [--licenses 1000000] [--db sqlite|postgres|both] [--pg URL]
                                  [--batch 5000] [--workers 4]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from datetime import UTC, datetime

import _setup as s
from sqlalchemy import create_engine, text

from bridge.logging import configure
from bridge.service.periods import close_due_periods
from bridge.store.engine import make_engine
from bridge.testing import FakeClock

RULE = '{"interval":"month","count":1,"anchor":"CALENDAR","timezone":"UTC"}'
NOW = datetime(2026, 2, 2, tzinfo=UTC)


def seed_sql(dialect: str, n: int) -> list[str]:
    """Statements that fill a migrated store: one product and policy, n licenses, n entries."""
    sqlite = dialect == "sqlite"
    series = (
        f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {n}) "
        if sqlite
        else ""
    )
    source = "FROM seq" if sqlite else f"FROM generate_series(1, {n}) AS seq(n)"
    pad = "printf('%010d', n)" if sqlite else "lpad(n::text, 10, '0')"
    t = (lambda v: f"'{v}'") if sqlite else (lambda v: f"TIMESTAMPTZ '{v}+00'")
    start, end, at = (
        t("2026-01-01 00:00:00.000000"),
        t("2026-02-01 00:00:00.000000"),
        t("2026-01-15 00:00:00.000000"),
    )
    created = t("2025-12-01 00:00:00.000000")
    return [
        f"INSERT INTO products (id, name, url, metadata, created, updated) "
        f"VALUES ('prod', 'Bench', NULL, '{{}}', {created}, {created})",
        f"INSERT INTO policies (id, product_id, name, max_uses, max_machines, max_cores, floating,"
        f" strict, overage_strategy, protected, duration, expiration_basis, usage_period, "
        f"metadata, created, updated) VALUES ('pol', 'prod', 'Monthly', NULL, 1, NULL, false, "
        f"false, 'NO_OVERAGE', false, NULL, 'FROM_CREATION', '{RULE}', '{{}}', {created}, "
        f"{created})",
        # key_digest only needs to be unique here: the bench never finds a license by key.
        f"{series}INSERT INTO licenses (id, key, key_digest, name, policy_id, uses, "
        f"max_uses_override, protected, suspended, expiry, metadata, created, updated, "
        f"period_start, period_end, period_open_uses) SELECT 'lic-' || {pad}, 'key-' || {pad}, "
        f"'kd-' || {pad}, NULL, 'pol', mod(n, 50) + 1, "
        f"NULL, false, false, NULL, '{{}}', {created}, {created}, {start}, {end}, 0 {source}",
        f"{series}INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, "
        f"uses_after, actor, occurred_at) SELECT 'inc-' || {pad}, 'lic-' || {pad}, 'increment',"
        f" mod(n, 50) + 1, 0, mod(n, 50) + 1, 'bench', {at} {source}",
    ]


def baseline_sql(
    dialect: str, now: str = "2026-02-02 00:00:00.000000", end: str = "2026-03-01 00:00:00.000000"
) -> list[str]:
    """Closing every period due at ``now`` (UTC) as three statements; the next ends at ``end``."""
    sqlite = dialect == "sqlite"
    new_id = "lower(hex(randomblob(16)))" if sqlite else "md5(l.id)"
    now, end = (f"'{t}'" if sqlite else f"TIMESTAMPTZ '{t}+00'" for t in (now, end))
    return [
        "INSERT INTO usage_periods (license_id, period_start, period_end, uses_at_open, "
        "uses_at_close, increments, decrements, resets, entries, reset_entry_id, closed_by, "
        "closed_at) SELECT l.id, l.period_start, l.period_end, l.period_open_uses, l.uses, "
        "COALESCE(SUM(CASE WHEN e.kind = 'increment' THEN e.delta ELSE 0 END), 0), "
        "COALESCE(SUM(CASE WHEN e.kind = 'decrement' THEN -e.delta ELSE 0 END), 0), "
        "COUNT(CASE WHEN e.kind = 'reset' THEN 1 END), COUNT(e.id), 'r-' || l.id, 'baseline', "
        f"{now} FROM licenses l LEFT JOIN usage_ledger e ON e.license_id = l.id "
        "AND e.occurred_at >= l.period_start AND e.occurred_at < l.period_end "
        f"WHERE l.period_end <= {now} GROUP BY l.id, l.period_start, l.period_end, "
        "l.period_open_uses, l.uses",
        "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor, "
        f"occurred_at) SELECT {new_id}, l.id, 'period_reset', -l.uses, l.uses, 0, 'period', "
        f"l.period_end FROM licenses l WHERE l.period_end <= {now}",
        f"UPDATE licenses SET uses = 0, period_start = period_end, period_end = {end}, "
        f"period_open_uses = 0 WHERE period_end <= {now}",
    ]


def run_statements(url: str, statements: list[str]) -> float:
    engine = make_engine(url)  # the bridge's own engine: the same SQLite pragmas for both sides
    started = time.perf_counter()
    with engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def check(url: str, n: int) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        periods = conn.execute(text("SELECT COUNT(*) FROM usage_periods")).scalar_one()
        resets = conn.execute(
            text("SELECT COUNT(*) FROM usage_ledger WHERE kind = 'period_reset'")
        ).scalar_one()
        open_ = conn.execute(text("SELECT COUNT(*) FROM licenses WHERE uses <> 0")).scalar_one()
    engine.dispose()
    assert (periods, resets, open_) == (n, n, 0), (periods, resets, open_)


def bridge_close(url: str, batch: int, workers: int = 1) -> float:
    container = s.container_for(url, migrate=False)
    container.sinks = ()
    started = time.perf_counter()
    closed = close_due_periods(container.uows, FakeClock(NOW), batch=batch, workers=workers)
    elapsed = time.perf_counter() - started
    container.dispose()
    assert closed > 0
    return elapsed


def report(db: str, n: int, base: float, bridge: float) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{db}: {n:,} licenses")
    print(f"  baseline (set-based SQL): {base:7.1f} s  {n / base:10,.0f} licenses/s")
    print(f"  bridge close_due_periods: {bridge:7.1f} s  {n / bridge:10,.0f} licenses/s")
    print(f"  bridge / baseline: {base / bridge:.2f}x   peak RSS of this process: {rss:.0f} MB")


def sqlite_run(n: int, batch: int) -> None:
    with s.scratch_dir() as folder:
        seeded = folder / "seeded.db"
        url = s.sqlite_url(seeded)
        s.container_for(url).dispose()
        t = time.perf_counter()
        run_statements(url, seed_sql("sqlite", n))
        print(f"(sqlite: seeded {n:,} licenses in {time.perf_counter() - t:.1f} s)")
        copies = {name: folder / f"{name}.db" for name in ("baseline", "bridge")}
        for target in copies.values():
            shutil.copyfile(seeded, target)
        base = run_statements(s.sqlite_url(copies["baseline"]), baseline_sql("sqlite"))
        check(s.sqlite_url(copies["baseline"]), n)
        bridge = bridge_close(s.sqlite_url(copies["bridge"]), batch)
        check(s.sqlite_url(copies["bridge"]), n)
        report("sqlite", n, base, bridge)


def postgres_run(n: int, batch: int, base_url: str, workers: int) -> None:
    with s.scratch_pg(base_url) as seeded:
        s.container_for(seeded).dispose()
        t = time.perf_counter()
        run_statements(seeded, seed_sql("postgresql", n))
        print(f"(postgres: seeded {n:,} licenses in {time.perf_counter() - t:.1f} s)")
        admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
        seeded_name = seeded.rsplit("/", 1)[1]
        urls = {}
        for name in ("baseline", "bridge"):
            copy = f"{seeded_name}_{name}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{seeded_name}"'))
            urls[name] = seeded.rsplit("/", 1)[0] + f"/{copy}"
        try:
            for url in urls.values():
                engine = create_engine(url, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(text("ANALYZE"))
                engine.dispose()
            base = run_statements(urls["baseline"], baseline_sql("postgresql"))
            check(urls["baseline"], n)
            bridge = bridge_close(urls["bridge"], batch, workers)
            check(urls["bridge"], n)
            report("postgres", n, base, bridge)
        finally:
            with admin.connect() as conn:
                for url in urls.values():
                    name = url.rsplit("/", 1)[1]
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", type=int, default=1_000_000)
    parser.add_argument(
        "--batch", type=int, default=5000, help="licenses per transaction (scheduler.close_batch)"
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="concurrent batches on PostgreSQL (as served)"
    )
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg", default=None, help=f"PostgreSQL URL (else ${s.PG_ENV})")
    args = parser.parse_args()
    configure("warning")
    if args.db in ("sqlite", "both"):
        sqlite_run(args.licenses, args.batch)
    if args.db in ("postgres", "both"):
        postgres_run(args.licenses, args.batch, s.pg_base_url(args.pg), args.workers)


if __name__ == "__main__":
    main()
