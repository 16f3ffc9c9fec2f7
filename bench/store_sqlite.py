"""Durable increments per second through the store on SQLite, next to raw ``sqlite3``.

bridge:   ``UsageService.apply`` (admin principal, one outbox sink) on the engine that
          ``bridge.store.engine.make_engine`` builds: WAL, synchronous=FULL, BEGIN IMMEDIATE.
raw:      the same durable writes with the stdlib driver, one connection per worker, the same
          pragmas, statements prepared once and reused from the connection's statement cache:
          BEGIN IMMEDIATE; the conditional counter UPDATE ... RETURNING; the ledger INSERT; the
          outbox INSERT; COMMIT.
raw+find: the raw transaction plus the license look-up SELECT the bridge runs first (its
          ``load_license``), to show how much of any gap is that extra statement.

Each measurement starts from a fresh copy of one seeded database (1,000 licenses, no maxUses)
whose WAL is first brought to a running service's steady state (``_setup.prime_sqlite_wal``),
and each increment picks a random license. The sides alternate over ``--rounds`` rounds; every
measurement ends with a check that counters, ledger and outbox agree.

    python bench/store_sqlite.py [--seconds 3] [--rounds 2] [--ops N] [--threads 1,4]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import _setup as s

from bridge.bootstrap import Container
from bridge.domain.errors import INT4_MAX
from bridge.domain.model import UsageKind
from bridge.service.batch_writer import BatchWriter
from bridge.service.usage import UsageChange

TARGET = 0.8
ACTOR = s.ADMIN.actor

# The statements the bridge issues for an increment (see SqlLicenses.try_add_uses, SqlLedger.add,
# SqlOutbox.add and SqlLicenses.find), written by hand for the stdlib driver.
FIND = (
    "SELECT licenses.id, licenses.key, licenses.name, licenses.policy_id, licenses.uses, "
    "licenses.max_uses_override, licenses.protected, licenses.suspended, licenses.expiry, "
    "licenses.metadata, licenses.created, licenses.updated, policies.product_id, "
    "policies.max_uses, CASE WHEN policies.expiration_basis = 'FROM_FIRST_USE' "
    "THEN policies.duration END "
    "FROM licenses JOIN policies ON policies.id = licenses.policy_id "
    "WHERE licenses.id = :ref OR licenses.key_digest = :digest "
    "ORDER BY CASE WHEN licenses.id = :ref THEN 0 ELSE 1 END LIMIT 1"
)
_MAX = (
    "coalesce(nullif(licenses.max_uses_override, 0), "
    "(SELECT policies.max_uses FROM policies WHERE policies.id = licenses.policy_id))"
)
UPDATE = (
    "UPDATE licenses SET uses = uses + :delta, updated = :now "
    f"WHERE id = :id AND uses + :delta >= 0 AND uses + :delta <= {INT4_MAX} "
    f"AND ({_MAX} IS NULL OR uses + :delta <= {_MAX}) RETURNING uses"
)
LEDGER = (
    "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor, "
    "idempotency_key, request_id, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
OUTBOX = (
    "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
    "VALUES (?, ?, 'pending', 0, ?, ?)"
)


def raw_connection(path: Path) -> sqlite3.Connection:
    """One connection, configured as bridge.store.engine configures its own."""
    conn = sqlite3.connect(
        path, timeout=30.0, isolation_level=None, check_same_thread=False, cached_statements=64
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def raw_worker(path: Path, ids: list[str], seed: int, *, find: bool) -> s.Worker:
    conn = raw_connection(path)
    cur = conn.cursor()
    rng = random.Random(seed)
    sink = s.SINKS[0].name

    def op() -> None:
        license_id = rng.choice(ids)
        # The text SQLAlchemy's SQLite DateTime stores: naive UTC with microseconds.
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        entry_id = str(uuid.uuid4())
        cur.execute("BEGIN IMMEDIATE")
        try:
            if find:
                digest = hashlib.sha256(license_id.encode()).hexdigest()
                cur.execute(FIND, {"ref": license_id, "digest": digest})
                if cur.fetchone() is None:
                    raise LookupError(license_id)
            cur.execute(UPDATE, {"delta": 1, "now": now, "id": license_id})
            got = cur.fetchone()
            if got is None:
                raise RuntimeError("increment rejected")
            after = got[0]
            cur.execute(
                LEDGER,
                (entry_id, license_id, "increment", 1, after - 1, after, ACTOR, None, None, now),
            )
            cur.execute(OUTBOX, (entry_id, sink, now, now))
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                cur.execute("ROLLBACK")
            raise

    return op, conn.close


def bridge_worker(container: Container, ids: list[str], seed: int) -> s.Worker:
    usage = container.usage()
    rng = random.Random(seed)

    def op() -> None:
        usage.apply(s.ADMIN, UsageChange(rng.choice(ids), UsageKind.INCREMENT, 1))

    return op, lambda: None


def batch_worker(writer: BatchWriter, ids: list[str], seed: int) -> s.Worker:
    """What ``meterbridge serve`` does with concurrent requests on SQLite."""
    rng = random.Random(seed)

    def op() -> None:
        writer.submit(s.ADMIN, UsageChange(rng.choice(ids), UsageKind.INCREMENT, 1)).result()

    return op, lambda: None


def check(path: Path, expected: int) -> None:
    """Every counted increment is in the counters, the ledger and the outbox."""
    conn = sqlite3.connect(path)
    try:
        uses = conn.execute("SELECT coalesce(sum(uses), 0) FROM licenses").fetchone()[0]
        entries = conn.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()
    if not uses == entries == pending >= expected:
        raise SystemExit(f"inconsistent store: uses={uses} ledger={entries} outbox={pending}")


LABELS = {
    "raw": "raw sqlite3",
    "raw+find": "raw sqlite3 + find SELECT",
    "bridge": "bridge UsageService.apply",
    "batch": "bridge BatchWriter (serve's path)",
}


class Bench:
    """Measurements on fresh copies of one seeded template database."""

    def __init__(self, folder: Path, template: Path, ids: list[str], budget: s.Budget) -> None:
        self.folder = folder
        self.template = template
        self.ids = ids
        self.budget = budget
        self.runs = 0

    def measure(self, label: str, workers: int, side: str) -> s.Result:
        self.runs += 1
        path = self.folder / f"run{self.runs}.db"
        s.copy_sqlite(self.template, path)
        hold = s.prime_sqlite_wal(path)
        container = None
        writer = None
        try:
            if side == "bridge":
                container = s.container_for(s.sqlite_url(path), migrate=False)
                bound = container

                def make(i: int) -> s.Worker:
                    return bridge_worker(bound, self.ids, i)
            elif side == "batch":
                container = s.container_for(s.sqlite_url(path), migrate=False)
                writer = BatchWriter(container.usage_uows, container.usage())
                shared = writer

                def make(i: int) -> s.Worker:
                    return batch_worker(shared, self.ids, i)
            else:

                def make(i: int) -> s.Worker:
                    return raw_worker(path, self.ids, i, find=side == "raw+find")

            result = s.measure_threads(label, make, workers, self.budget)
        finally:
            if writer is not None:
                writer.close()
            if container is not None:
                container.dispose()
            hold.close()
        s.row(result)
        check(path, result.ops)
        path.unlink()
        return result

    def compare(self, workers: int, sides: list[str], rounds: int) -> str:
        """Alternate the sides over ``rounds`` rounds, then print the totals and the ratio."""
        s.header(f"SQLite store, {workers} thread(s), one connection per thread")
        got: dict[str, list[s.Result]] = {side: [] for side in sides}
        for r in range(rounds):
            for side in sides if r % 2 == 0 else reversed(sides):
                label = f"{LABELS[side]} x{workers} (round {r + 1})"
                got[side].append(self.measure(label, workers, side))
        totals = {
            side: s.merge(f"{LABELS[side]} x{workers} (all rounds)", results)
            for side, results in got.items()
        }
        print()
        for total in totals.values():
            s.row(total)
        bridge = totals["bridge"]
        if "raw+find" in totals:
            s.ratio(f"SQLite x{workers} vs raw+find", bridge, totals["raw+find"], TARGET)
        if "batch" in totals:
            s.ratio(f"SQLite x{workers} BatchWriter", totals["batch"], totals["raw"], TARGET)
        return s.ratio(f"SQLite x{workers}", bridge, totals["raw"], TARGET)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    s.add_budget_args(parser, seconds=3.0, warmup=0.5)
    parser.add_argument("--threads", default="1,4", help="worker counts to run (default 1,4)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (2)")
    parser.add_argument("--licenses", type=int, default=1000)
    parser.add_argument("--no-find", action="store_true", help="skip the raw+find measurement")
    parser.add_argument("--dir", default=None, help="where the scratch databases go (on disk)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",") if n.strip()]
    sides = ["raw", "bridge"] if args.no_find else ["raw", "raw+find", "bridge"]

    with s.scratch_dir(args.dir) as folder:
        template = folder / "template.db"
        seeding = s.container_for(s.sqlite_url(template))
        ids = s.seed(seeding, args.licenses)
        seeding.dispose()  # the last connection closes: the WAL is checkpointed into the file
        s.context_line()
        print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL, scratch folder {folder}")
        print(f"{args.licenses} licenses (no maxUses), a random one per increment, sink 'bench'")
        bench = Bench(folder, template, ids, s.budget_from(args))
        lines = [
            bench.compare(workers, [*sides, "batch"] if workers > 1 else sides, args.rounds)
            for workers in counts
        ]

    print("\nSummary (target: bridge >= 0.8x raw)")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
