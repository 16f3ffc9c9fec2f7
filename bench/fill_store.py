"""Speed as the store grows: increments, usage history pages, outbox claims and period closing
on a store holding 0, 1 million, 10 million ledger entries (``--sizes``), each next to the raw
driver doing the same operation on the same store.

**The fill.** Each size gets a fresh, migrated database. The rows are copies of rows the bridge
itself wrote: one product, one monthly policy and one license created through its use cases on
2026-11-01, one increment through ``UsageService.apply`` and its delivery by the relay; every
column the fill does not set is taken from those rows. Then ``max(1000, entries /
--per-license)`` licenses (a fresh id, key and key digest each) and the ledger entries in time
order across November, round-robin over the licenses (so a license's entries are scattered
through the table, as a month of traffic leaves them; each has the license's uses before and
after), one **delivered** outbox row per entry (the history a bridge without a purge keeps),
and each license's counter equal to its entries. The raw driver inserts them set-based:
``executemany`` of 200,000 rows per transaction on SQLite (journal off, synchronous off and a
4 GiB page cache while it fills, the file synced and back in WAL before anything is measured;
a thread builds the next rows while SQLite inserts), ``COPY`` on PostgreSQL; the outbox with
one ``INSERT ... SELECT`` from the ledger.

**The measurements**, with the clock on 2026-11-30, one thread, each on the bridge and then on
the raw driver (stdlib ``sqlite3`` or psycopg) alternating in halves:

- **increments**: ``UsageService.apply`` on random licenses (each writes a pending outbox row);
  raw: the guarded counter ``UPDATE ... RETURNING``, the ledger and outbox inserts, in one
  durable transaction (``store_sqlite.py``'s raw side);
- **history pages**: ``usage_history`` page 1 (100 entries, newest first, with the total) of
  random licenses; raw: the page ``SELECT`` on the license's index and the ``COUNT(*)``;
- **outbox claims**: the relay draining the pending rows in batches of 100 (claim, deliver to
  an in-memory sink, mark delivered) among the delivered history; raw: per batch one
  transaction that marks the previous batch delivered and claims and leases the next 100;
- **period closing**: the clock moved to 2026-12-01, ``close_due_periods`` closes every
  license's November (totals read from the ledger), in batches of 5,000; raw: the same writes as
  three set-based statements (``periods_close.py``'s baseline) on a copy of the store.

Size 0 (the empty store) and the smallest non-empty size are printed for reference. Nothing here
asserts on time.

    python bench/fill_store.py [--sizes 0,1000000,10000000] [--per-license 100] [--ops 2000]
                               [--db sqlite|postgres] [--pg URL] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import resource
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _setup as s
from periods_close import baseline_sql
from sqlalchemy import create_engine, text

from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service import licenses, policies, products
from bridge.service.common import PageRequest
from bridge.service.periods import close_due_periods
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageChange, UsageService, usage_history
from bridge.store.licenses import key_digest
from bridge.store.sql import read_ts, sqlite_text
from bridge.testing import FakeClock
from connectors.memory import InMemorySink

RULE = {"interval": "month", "count": 1, "anchor": "CALENDAR", "timezone": "UTC"}
OPENED = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
CLOSE_AT = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
MONTH = timedelta(days=29)  # entries fall within the month's first 29 days
CHUNK = 200_000  # rows per executemany (and per transaction on SQLite)
SINK = s.SINKS[0].name
LEASE_S = 300

Row = dict[str, Any]
Timing = tuple[float, float, float]  # ops per second, p50 ms, p99 ms


# The fill -----------------------------------------------------------------------------------
def _templates(url: str) -> tuple[Row, Row, Row]:
    """A license, a ledger entry and a delivered outbox row, as the bridge writes them."""
    clock = FakeClock(OPENED)
    c = s.container_for(url)
    c.clock = clock
    sink = InMemorySink(SINK)
    c.sinks = (sink,)
    uows = c.uows
    product = products.create_product(uows, clock, s.ADMIN, NewProduct(name="Bench"))
    terms = NewPolicy(product.id, name="Monthly", usage_period=RULE)
    policy = policies.create_policy(uows, clock, s.ADMIN, terms)
    lic = licenses.create_license(uows, clock, s.ADMIN, NewLicense(policy.id))
    clock.advance(seconds=1)
    UsageService(c.usage_uows, clock, [SINK]).apply(
        s.ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)
    )
    relay = Relay(uows, [sink], clock, RelayPolicy(batch_size=100))
    relay.run_once()
    relay.flush()
    c.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        rows = [
            dict(conn.execute(text(f"SELECT * FROM {table}")).mappings().one())
            for table in ("licenses", "usage_ledger", "outbox")
        ]
        for table in ("outbox", "usage_ledger", "licenses"):  # the fill writes them anew
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
    license_row, entry, item = rows
    assert item["status"] == "delivered", item
    # the fill writes the outbox from the ledger: hold the relations it relies on
    assert item["created"] == entry["occurred_at"], (item, entry)
    return license_row, entry, item


def _lease_s(item: Row) -> int:
    """A delivered item keeps the end of the lease it was delivered under (whole seconds)."""
    lease = read_ts(item["next_attempt_at"]) - read_ts(item["created"])
    assert lease == timedelta(seconds=int(lease.total_seconds())), lease
    return int(lease.total_seconds())


def _ts(dialect: str) -> Callable[[datetime], Any]:
    return sqlite_text if dialect == "sqlite" else (lambda moment: moment)


def _license_rows(
    template: Row, ids: list[str], per: int, step: timedelta, ts: Callable[[datetime], Any]
) -> Iterator[tuple[Any, ...]]:
    """Each license with its ``per`` entries counted: the counter, and updated at the last."""
    columns = list(template)
    n_ids = len(ids)
    template = {  # JSON as text (PostgreSQL hands it back parsed)
        k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in template.items()
    }
    for j, license_id in enumerate(ids):
        key = licenses.generate_key()
        row = dict(template, id=license_id, key=key, key_digest=key_digest(key), uses=per)
        if per:
            row["updated"] = ts(OPENED + step * ((per - 1) * n_ids + j + 1))
        yield tuple(row[c] for c in columns)


def _entry_rows(
    template: Row, ids: list[str], entries: int, ts: Callable[[datetime], Any]
) -> Iterator[tuple[Any, ...]]:
    """Entry ``n`` is the ``n // licenses``-th of license ``n % licenses``, in time order."""
    columns = [c for c in template if c != "seq"]
    base = [template[c] for c in columns]
    at = {c: i for i, c in enumerate(columns)}
    step = MONTH / max(entries, 1)
    n_ids = len(ids)
    i_id, i_lic, i_before, i_after, i_at = (
        at[c] for c in ("id", "license_id", "uses_before", "uses_after", "occurred_at")
    )
    text = ts is sqlite_text
    seconds: dict[int, str] = {}  # the text of each whole second, made once (sqlite)
    random = b""
    for n in range(entries):
        if n % 65536 == 0:  # uuid4's random bits, drawn in bulk
            random = os.urandom(16 * 65536)
        r = (n % 65536) * 16
        h = random[r : r + 16].hex()
        variant = "89ab"[random[r + 8] & 3]
        moment = OPENED + step * (n + 1)
        if text:  # sqlite_text's format, with the seconds' part cached
            whole = int(moment.timestamp())
            head = seconds.get(whole)
            if head is None:
                seconds.clear()
                head = seconds[whole] = sqlite_text(moment)[:19]
            stamp: Any = f"{head}.{moment.microsecond:06d}"
        else:
            stamp = moment
        row = base.copy()
        row[i_id] = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"
        row[i_lic] = ids[n % n_ids]
        row[i_before] = n // n_ids
        row[i_after] = row[i_before] + 1
        row[i_at] = stamp
        yield tuple(row)


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Lists of ``size`` rows, made by a thread of their own: the driver lets the GIL go while
    SQLite inserts, so the next chunk is built meanwhile."""
    ready: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue(maxsize=2)

    failed: list[BaseException] = []

    def produce() -> None:
        chunk: list[tuple[Any, ...]] = []
        try:
            for row in rows:
                chunk.append(row)
                if len(chunk) == size:
                    ready.put(chunk)
                    chunk = []
            if chunk:
                ready.put(chunk)
        except BaseException as exc:  # handed to the consumer
            failed.append(exc)
        finally:
            ready.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while (chunk := ready.get()) is not None:
        yield chunk
    thread.join()
    if failed:
        raise failed[0]


def _outbox_sql(dialect: str, item: Row) -> tuple[str, Row]:
    lease = _lease_s(item)
    leased = (
        f"strftime('%Y-%m-%d %H:%M:%S', occurred_at, '+{lease} seconds') || substr(occurred_at, 20)"
        if dialect == "sqlite"
        else f"occurred_at + make_interval(secs => {lease})"
    )
    sql = (
        "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, last_error, "
        f"created, reason) SELECT id, :sink, :status, :attempts, {leased}, :last_error, "
        "occurred_at, :reason FROM usage_ledger ORDER BY seq"
    )
    keep = ("sink", "status", "attempts", "last_error", "reason")
    return sql, {k: item[k] for k in keep}


def fill(url: str, dialect: str, entries: int, n_licenses: int) -> float:
    """Fill a fresh store; returns the seconds the fill took (after the templates)."""
    license_row, entry, item = _templates(url)
    started = time.perf_counter()
    ids = [str(uuid.uuid4()) for _ in range(n_licenses)]
    per = entries // n_licenses
    ts = _ts(dialect)
    lic_cols = list(license_row)
    entry_cols = [c for c in entry if c != "seq"]
    lic_rows = _license_rows(license_row, ids, per, MONTH / max(entries, 1), ts)
    entry_rows = _entry_rows(entry, ids, entries, ts)
    outbox_sql, outbox_params = _outbox_sql(dialect, item)
    if dialect == "sqlite":
        _fill_sqlite(url, lic_cols, lic_rows, entry_cols, entry_rows, outbox_sql, outbox_params)
    else:
        _fill_postgres(url, lic_cols, lic_rows, entry_cols, entry_rows, outbox_sql, outbox_params)
    return time.perf_counter() - started


def _insert(table: str, columns: list[str], style: str) -> str:
    marks = ", ".join(style for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _fill_sqlite(
    url: str,
    lic_cols: list[str],
    lic_rows: Iterator[tuple[Any, ...]],
    entry_cols: list[str],
    entry_rows: Iterator[tuple[Any, ...]],
    outbox_sql: str,
    outbox_params: Row,
) -> None:
    path = s.sqlite_path(url)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # A scratch file filled once (a crash discards it): no journal, no fsync, a page cache
        # that holds the indexes, so their random inserts stay in memory.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-4194304")
        conn.execute("PRAGMA foreign_keys=ON")
        for table, cols, rows in (
            ("licenses", lic_cols, lic_rows),
            ("usage_ledger", entry_cols, entry_rows),
        ):
            sql = _insert(table, cols, "?")
            for chunk in _chunks(rows, CHUNK):
                conn.execute("BEGIN")
                conn.executemany(sql, chunk)
                conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute(outbox_sql, outbox_params)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # as the bridge runs it
    finally:
        conn.close()
    for target in (path, path.parent):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fill_postgres(
    url: str,
    lic_cols: list[str],
    lic_rows: Iterator[tuple[Any, ...]],
    entry_cols: list[str],
    entry_rows: Iterator[tuple[Any, ...]],
    outbox_sql: str,
    outbox_params: Row,
) -> None:
    import psycopg

    with psycopg.connect(s.libpq_conninfo(url)) as conn:
        with conn.cursor() as cur:
            for table, cols, rows in (
                ("licenses", lic_cols, lic_rows),
                ("usage_ledger", entry_cols, entry_rows),
            ):
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            sql = outbox_sql
            for name in outbox_params:
                sql = sql.replace(f":{name}", f"%({name})s")
            cur.execute(sql, outbox_params)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


# The measurements ---------------------------------------------------------------------------
def timed(ops: int, op: Callable[[], Any]) -> list[float]:
    """The latency of each of ``ops`` calls of ``op``."""
    latencies = []
    for _ in range(ops):
        t = time.perf_counter()
        op()
        latencies.append(time.perf_counter() - t)
    return latencies


def summary(latencies: list[float]) -> Timing:
    ordered = sorted(latencies)
    return (
        len(ordered) / sum(ordered),
        ordered[len(ordered) // 2] * 1000,
        ordered[int(len(ordered) * 0.99)] * 1000,
    )


def alternate(ops: int, bridge: Callable[[], Any], raw: Callable[[], Any]) -> tuple[Timing, Timing]:
    """``ops`` calls of each, in halves: bridge, raw, raw, bridge."""
    half = ops // 2
    got: dict[str, list[float]] = {"bridge": [], "raw": []}
    for name, op in (("bridge", bridge), ("raw", raw), ("raw", raw), ("bridge", bridge)):
        got[name] += timed(half, op)
    return summary(got["bridge"]), summary(got["raw"])


class Raw:
    """The raw driver on the same store: stdlib sqlite3 configured as the bridge's engine, or
    psycopg; statements written by hand with ``?`` placeholders."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            from store_sqlite import raw_connection

            self.conn: Any = raw_connection(s.sqlite_path(url))
            self.ts: Callable[[datetime], Any] = sqlite_text
        else:
            import psycopg

            self.conn = psycopg.connect(s.libpq_conninfo(url))
            self.ts = lambda moment: moment
        self.cur = self.conn.cursor()

    def sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    def begin(self) -> None:
        if self.sqlite:
            self.cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.sqlite:
            self.cur.execute("COMMIT")
        else:
            self.conn.commit()

    def close(self) -> None:
        self.conn.close()


MAX_USES = (
    "coalesce(nullif(licenses.max_uses_override, 0), "
    "(SELECT policies.max_uses FROM policies WHERE policies.id = licenses.policy_id))"
)
RAW_INCREMENT = (
    "UPDATE licenses SET uses = uses + 1, updated = ? WHERE id = ? AND uses + 1 <= 2147483647 "
    f"AND ({MAX_USES} IS NULL OR uses + 1 <= {MAX_USES}) RETURNING uses"
)
RAW_LEDGER = (
    "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor, "
    "occurred_at) VALUES (?, ?, 'increment', 1, ?, ?, ?, ?)"
)
RAW_OUTBOX = (
    "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
    "VALUES (?, ?, 'pending', 0, ?, ?)"
)
ENTRY = (
    "e.seq, e.id, e.license_id, e.kind, e.delta, e.uses_before, e.uses_after, e.actor, "
    "e.idempotency_key, e.request_id, e.occurred_at, e.machine_id"
)
RAW_PAGE = (
    f"SELECT {ENTRY} FROM usage_ledger e WHERE e.license_id = ? ORDER BY e.seq DESC LIMIT 100"
)
RAW_COUNT = "SELECT COUNT(*) FROM usage_ledger WHERE license_id = ?"
RAW_CLAIM = (
    f"SELECT o.id, {ENTRY} FROM outbox o JOIN usage_ledger e ON e.id = o.entry_id "
    "WHERE o.sink = ? AND o.status IN ('pending', 'inflight') AND o.next_attempt_at <= ? "
    "ORDER BY o.next_attempt_at, o.id LIMIT 100"
)


def raw_increment(raw: Raw, rng: random.Random, ids: list[str], actor: str) -> None:
    now = raw.ts(NOW)
    license_id = rng.choice(ids)
    entry_id = str(uuid.uuid4())
    raw.begin()
    raw.cur.execute(raw.sql(RAW_INCREMENT), (now, license_id))
    (after,) = raw.cur.fetchone()
    raw.cur.execute(raw.sql(RAW_LEDGER), (entry_id, license_id, after - 1, after, actor, now))
    raw.cur.execute(raw.sql(RAW_OUTBOX), (entry_id, SINK, now, now))
    raw.commit()


def raw_page(raw: Raw, rng: random.Random, ids: list[str]) -> None:
    license_id = rng.choice(ids)
    raw.cur.execute(raw.sql(RAW_PAGE), (license_id,))
    raw.cur.fetchall()
    raw.cur.execute(raw.sql(RAW_COUNT), (license_id,))
    raw.cur.fetchone()


class RawRelay:
    """Per batch one transaction: the previous batch marked delivered, the next one claimed and
    leased (the relay's steady state while a backlog drains)."""

    def __init__(self, raw: Raw) -> None:
        self.raw = raw
        self.held: list[int] = []
        self.delivered = 0

    def _ids(self, ids: list[int]) -> str:
        return f"({', '.join(str(int(i)) for i in ids)})"

    def batch(self) -> None:
        raw = self.raw
        raw.begin()
        self._mark()
        suffix = "" if raw.sqlite else " FOR UPDATE OF o SKIP LOCKED"
        raw.cur.execute(raw.sql(RAW_CLAIM) + suffix, (SINK, raw.ts(NOW)))
        rows = raw.cur.fetchall()
        self.held = [row[0] for row in rows]
        if self.held:
            lease = raw.ts(NOW + timedelta(seconds=LEASE_S))
            raw.cur.execute(
                raw.sql(
                    "UPDATE outbox SET status = 'inflight', next_attempt_at = ?, "
                    f"attempts = attempts + 1 WHERE id IN {self._ids(self.held)}"
                ),
                (lease,),
            )
        raw.commit()

    def _mark(self) -> None:
        if self.held:
            self.raw.cur.execute(
                f"UPDATE outbox SET status = 'delivered' WHERE id IN {self._ids(self.held)}"
            )
            self.delivered += len(self.held)
            self.held = []

    def flush(self) -> None:
        self.raw.begin()
        self._mark()
        self.raw.commit()


Results = dict[str, tuple[Timing, Timing | None]]


def measure(url: str, ids: list[str], ops: int) -> Results:
    clock = FakeClock(NOW)
    c = s.container_for(url, migrate=False)
    c.clock = clock
    sink = InMemorySink(SINK)
    c.sinks = (sink,)
    raw = Raw(url)
    rng = random.Random(1)
    usage = UsageService(c.usage_uows, clock, [SINK])
    results: Results = {}
    try:
        results["increment"] = alternate(
            ops,
            lambda: usage.apply(s.ADMIN, UsageChange(rng.choice(ids), UsageKind.INCREMENT, 1)),
            lambda: raw_increment(raw, rng, ids, s.ADMIN.actor),
        )
        page = PageRequest(1, 100)
        results["history page"] = alternate(
            ops,
            lambda: usage_history(c.uows, s.ADMIN, rng.choice(ids), page),
            lambda: raw_page(raw, rng, ids),
        )
        relay = Relay(c.uows, [sink], clock, RelayPolicy(batch_size=100))
        raw_relay = RawRelay(raw)
        batches = max(ops // 100, 2)  # each side drains the ops rows of its share
        results["outbox claim+mark (100)"] = alternate(batches, relay.run_once, raw_relay.batch)
        relay.flush()
        raw_relay.flush()
        assert len(sink.received) + raw_relay.delivered == 2 * ops, (
            len(sink.received),
            raw_relay.delivered,
        )
    finally:
        raw.close()
        c.dispose()
    return results


def bridge_close(url: str, n_licenses: int) -> Timing:
    clock = FakeClock(CLOSE_AT)
    c = s.container_for(url, migrate=False)
    started = time.perf_counter()
    closed = close_due_periods(
        c.uows, clock, batch=5000, workers=1 if url.startswith("sqlite") else 4
    )
    elapsed = time.perf_counter() - started
    c.dispose()
    assert closed == n_licenses, (closed, n_licenses)
    return n_licenses / elapsed, elapsed / n_licenses * 1000, 0.0


def raw_close(url: str, n_licenses: int) -> Timing:
    """``periods_close.py``'s set-based baseline, on a copy of the SQLite store."""
    path = s.sqlite_path(url)
    copy = path.with_name("close-baseline.db")
    shutil.copyfile(path, copy)
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for statement in baseline_sql(
            "sqlite", now=sqlite_text(CLOSE_AT), end="2027-01-01 00:00:00.000000"
        ):
            conn.execute(statement)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        closed = conn.execute("SELECT COUNT(*) FROM usage_periods").fetchone()[0]
        conn.close()
    finally:
        copy.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    assert closed == n_licenses, (closed, n_licenses)
    return n_licenses / elapsed, elapsed / n_licenses * 1000, 0.0


def measure_size(url: str, dialect: str, size: int, n_licenses: int, ops: int) -> Results:
    took = fill(url, dialect, size, n_licenses)
    rate = f", {size / took:,.0f} entries/s" if size else ""
    print(f"{dialect}: {size:,} entries over {n_licenses:,} licenses filled in {took:.0f} s{rate}")
    ids = _license_ids(url)
    results = measure(url, ids, ops)
    # the close baseline runs first, on a copy of the store as the bridge finds it (SQLite)
    raw = raw_close(url, n_licenses) if dialect == "sqlite" else None
    results["period close (per license)"] = (bridge_close(url, n_licenses), raw)
    return results


def _license_ids(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM licenses ORDER BY id")).scalars())
    engine.dispose()
    return ids


def _line(name: str, timing: Timing) -> str:
    rate, p50, p99 = timing
    tail = f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms" if p99 else f"{p50:7.3f} ms each"
    return f"{rate:10,.0f} /s  {tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="0,1000000,10000000", help="ledger entries, comma-separated"
    )
    parser.add_argument("--per-license", type=int, default=100, help="entries per license")
    parser.add_argument("--ops", type=int, default=2000, help="increments and history pages")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg", default=None, help="PostgreSQL server URL (a scratch db is made)")
    parser.add_argument("--dir", default=None, help="where the scratch SQLite files go")
    args = parser.parse_args()
    configure("warning", "console")
    s.context_line()
    started = time.perf_counter()
    table: dict[int, Results] = {}
    for size in [int(x) for x in args.sizes.split(",")]:
        n_licenses = max(1000, size // args.per_license)
        if args.db == "sqlite":
            with s.scratch_dir(args.dir) as folder:
                url = s.sqlite_url(folder / "fill.db")
                table[size] = measure_size(url, "sqlite", size, n_licenses, args.ops)
        else:
            with s.scratch_pg(s.pg_base_url(args.pg)) as url:
                table[size] = measure_size(url, "postgresql", size, n_licenses, args.ops)
        for name, (bridge, raw) in table[size].items():
            print(f"  {name:28} bridge {_line(name, bridge)}")
            if raw is not None:
                print(f"  {'':28} raw    {_line(name, raw)}  bridge/raw {bridge[0] / raw[0]:.3g}x")
    sizes = sorted(n for n in table if n)
    if len(sizes) > 1:
        base = table[sizes[0]]
        print(f"\nbridge rate at each size / at {sizes[0]:,} entries:")
        for name in base:
            ratios = "  ".join(
                f"{n:,}: {table[n][name][0][0] / base[name][0][0]:.2f}x" for n in sizes[1:]
            )
            print(f"  {name:28} {ratios}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS of this process: {rss:.0f} MB; wall time {time.perf_counter() - started:.0f} s"
    )
    print(f"load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
