"""Speed as the store grows: increments, usage history pages, outbox claims and period closing
on a store holding 0, 1 million, 10 million ledger entries (``--sizes``).

Each size gets a fresh database, filled with plain SQL (quick): one product and monthly policy,
``max(1000, entries / --per-license)`` licenses in November 2026's period, the ledger entries
spread over the licenses and the month, and one **delivered** outbox row per entry (the history
a bridge without a purge keeps). Then, with the clock on 2026-11-30, through the bridge's own use
cases, one thread:

- **increments**: ``UsageService.apply`` on random licenses (each writes a pending outbox row);
- **history pages**: ``usage_history`` page 1 (100 entries, newest first, with the total) of
  random licenses;
- **outbox claims**: the relay draining those pending rows in batches of 100 (claim, deliver to
  an in-memory sink, mark delivered) among the delivered history;
- **period closing**: the clock moved to 2026-12-01, ``close_due_periods`` closes every
  license's November (totals read from the ledger), in batches of 5,000.

The baseline is the smallest non-empty size in the run (the same operations, the same history
per license, a smaller table); size 0, the empty store, is printed for reference (it has no
history to page through or to sum when closing). Nothing here asserts on time.

    python bench/fill_store.py [--sizes 0,100000,1000000] [--per-license 100] [--ops 2000]
                               [--db sqlite|postgres] [--pg URL] [--dir PATH]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import _setup as s
from sqlalchemy import create_engine, text

from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service.common import PageRequest
from bridge.service.periods import close_due_periods
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageChange, UsageService, usage_history
from bridge.testing import FakeClock
from connectors.memory import InMemorySink

RULE = '{"interval":"month","count":1,"anchor":"CALENDAR","timezone":"UTC"}'
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
CLOSE_AT = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
MONTH_S = 29 * 86400  # entries fall within the month's first 29 days


def seed_sql(dialect: str, entries: int, licenses: int) -> list[str]:
    sqlite = dialect == "sqlite"

    def series(n: int) -> tuple[str, str]:
        if sqlite:
            last = n - 1
            cte = (
                "WITH RECURSIVE seq(n) AS "
                f"(SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {last}) "
            )
            return cte, "FROM seq"
        return "", f"FROM generate_series(0, {n - 1}) AS seq(n)"

    def pad(expr: str, width: int) -> str:
        return f"printf('%0{width}d', {expr})" if sqlite else f"lpad(({expr})::text, {width}, '0')"

    def ts(value: str) -> str:
        return f"'{value}.000000'" if sqlite else f"TIMESTAMPTZ '{value}+00'"

    at = (
        f"strftime('%Y-%m-%d %H:%M:%S', '2026-11-01', '+' || (n % {MONTH_S}) || ' seconds')"
        " || '.000000'"
        if sqlite
        else f"TIMESTAMPTZ '2026-11-01 00:00:00+00' + (n % {MONTH_S}) * INTERVAL '1 second'"
    )
    created, start, end = (
        ts("2026-10-01 00:00:00"),
        ts("2026-11-01 00:00:00"),
        ts("2026-12-01 00:00:00"),
    )
    lic = f"'lic-' || {pad(f'n % {licenses}', 8)}"
    statements = [
        f"INSERT INTO products (id, name, url, metadata, created, updated) "
        f"VALUES ('prod', 'Bench', NULL, '{{}}', {created}, {created})",
        f"INSERT INTO policies (id, product_id, name, max_uses, max_machines, max_cores, floating,"
        f" strict, overage_strategy, protected, duration, expiration_basis, usage_period, "
        f"metadata, created, updated) VALUES ('pol', 'prod', 'Monthly', NULL, 1, NULL, false, "
        f"false, 'NO_OVERAGE', false, NULL, 'FROM_CREATION', '{RULE}', '{{}}', {created}, "
        f"{created})",
    ]
    cte, source = series(licenses)
    per = entries // licenses
    statements.append(
        f"{cte}INSERT INTO licenses (id, key, name, policy_id, uses, max_uses_override, "
        f"protected, suspended, expiry, metadata, created, updated, period_start, period_end, "
        f"period_open_uses) SELECT 'lic-' || {pad('n', 8)}, 'key-' || {pad('n', 8)}, NULL, "
        f"'pol', {per}, NULL, false, false, NULL, '{{}}', {created}, {created}, {start}, {end}, 0 "
        f"{source}"
    )
    if entries:
        cte, source = series(entries)
        statements += [
            f"{cte}INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after,"
            f" actor, occurred_at) SELECT 'e-' || {pad('n', 10)}, {lic}, 'increment', 1, 0, 1, "
            f"'bench', {at} {source}",
            "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
            "SELECT id, 'bench', 'delivered', 1, occurred_at, occurred_at FROM usage_ledger",
        ]
    return statements


def timed(ops: int, op: Callable[[], Any]) -> tuple[float, float, float]:
    """(ops per second, p50 ms, p99 ms) of ``ops`` calls of ``op``."""
    latencies = []
    started = time.perf_counter()
    for _ in range(ops):
        t = time.perf_counter()
        op()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return (
        ops / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


def measure(
    url: str, entries: int, licenses: int, ops: int
) -> dict[str, tuple[float, float, float]]:
    clock = FakeClock(NOW)
    c = s.container_for(url, migrate=False)
    c.clock = clock
    sink = InMemorySink("bench")
    c.sinks = (sink,)
    rng = random.Random(1)
    ids = [f"lic-{n:08d}" for n in range(licenses)]
    usage = UsageService(c.usage_uows, clock, ["bench"])
    results = {}
    results["increment"] = timed(
        ops, lambda: usage.apply(s.ADMIN, UsageChange(rng.choice(ids), UsageKind.INCREMENT, 1))
    )
    page = PageRequest(1, 100)
    results["history page"] = timed(
        ops, lambda: usage_history(c.uows, s.ADMIN, rng.choice(ids), page)
    )
    relay = Relay(c.uows, [sink], clock, RelayPolicy(batch_size=100))
    batches = max(ops // 100, 1)
    results["outbox claim+mark (100)"] = timed(batches, relay.run_once)
    relay.flush()
    assert len(sink.received) == ops, len(sink.received)
    clock.set(CLOSE_AT)
    started = time.perf_counter()
    closed = close_due_periods(
        c.uows, clock, batch=5000, workers=1 if url.startswith("sqlite") else 4
    )
    elapsed = time.perf_counter() - started
    assert closed == licenses, (closed, licenses)
    results["period close (per license)"] = (licenses / elapsed, elapsed / licenses * 1000, 0.0)
    c.dispose()
    return results


def fill(url: str, dialect: str, entries: int, licenses: int) -> float:
    s.container_for(url).dispose()  # migrated
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for sql in seed_sql(dialect, entries, licenses):
            conn.exec_driver_sql(sql)
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="0,100000,1000000", help="ledger entries, comma-separated"
    )
    parser.add_argument("--per-license", type=int, default=100, help="entries per license")
    parser.add_argument("--ops", type=int, default=2000, help="increments and history pages")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg", default=None, help="PostgreSQL server URL (a scratch db is made)")
    parser.add_argument("--dir", default=None, help="where the scratch SQLite files go")
    args = parser.parse_args()
    configure("warning", "console")
    s.context_line()
    table: dict[int, dict[str, tuple[float, float, float]]] = {}
    for size in [int(x) for x in args.sizes.split(",")]:
        licenses = max(1000, size // args.per_license)
        if args.db == "sqlite":
            with s.scratch_dir(args.dir) as folder:
                url = s.sqlite_url(folder / "fill.db")
                took = fill(url, "sqlite", size, licenses)
                print(f"sqlite: {size:,} entries over {licenses:,} licenses filled in {took:.0f} s")
                table[size] = measure(url, size, licenses, args.ops)
        else:
            with s.scratch_pg(s.pg_base_url(args.pg)) as url:
                took = fill(url, "postgresql", size, licenses)
                print(
                    f"postgres: {size:,} entries over {licenses:,} licenses filled in {took:.0f} s"
                )
                table[size] = measure(url, size, licenses, args.ops)
        for name, (rate, p50, p99) in table[size].items():
            tail = f"  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms" if p99 else f"  {p50:7.3f} ms each"
            print(f"  {name:28} {rate:10,.0f} /s{tail}")
    # The baseline is the smallest store that holds the same history per license: an empty one
    # has no pages to read and no totals to sum, so it is printed but compares nothing.
    sizes = sorted(n for n in table if n)
    if len(sizes) > 1:
        base = table[sizes[0]]
        print(f"\nrate at each size / rate at {sizes[0]:,} entries (the baseline):")
        for name in base:
            ratios = "  ".join(
                f"{n:,}: {table[n][name][0] / base[name][0]:.2f}x" for n in sizes[1:]
            )
            print(f"  {name:28} {ratios}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MB")


if __name__ == "__main__":
    main()
