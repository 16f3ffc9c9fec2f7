"""Offline usage records applied per second by a check-in, next to raw ``sqlite3`` doing the
same durable writes.

bridge:    ``CheckInService.check_in`` with a batch of ``--batch`` records (1,000, the most one
           request takes) on one license of a check-in policy, one outbox sink: one transaction
           per batch, each record in a savepoint (its id looked up, the counter, the ledger,
           the outbox and the record row).
baseline:  the stdlib driver writing what that check-in writes, one connection configured as
           ``bridge.store.engine`` configures its own (WAL, synchronous=FULL, foreign keys),
           one ``BEGIN IMMEDIATE ... COMMIT`` for the batch: per record the guarded counter
           ``UPDATE ... RETURNING`` (its answer gives the ledger's uses before and after), then
           the ledger entries, the outbox rows and the record rows with one ``executemany``
           each. No savepoints, no look-ups: the least the same durable result costs.
reference: not a baseline: the same uses as ``--batch`` single increments through the bridge's
           ``UsageService.apply``, each a durable transaction of its own (what the same client
           costs when it is online).

Each side runs on a fresh SQLite file per round, set up the same way through the bridge; the
sides alternate (the order rotates each round); the best of ``--rounds`` is printed. Every run
ends with a check that the counter, the ledger, the outbox and the records agree.

    python bench/checkin.py [--batch 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import _setup as s
from store_sqlite import LEDGER, OUTBOX, UPDATE, raw_connection

from bridge.domain.commands import CheckIn, NewLicense, NewPolicy, NewProduct, RawUsageRecord
from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service import licenses, policies, products
from bridge.service.usage import UsageChange

RECORD = (
    "INSERT INTO usage_records (id, license_id, increment, occurred_at, entry_id, "
    "period_start, late, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _license(container: s.Container) -> str:
    uows, clock = container.uows, container.clock
    product = products.create_product(uows, clock, s.ADMIN, NewProduct(name="Bench"))
    terms = NewPolicy(
        product.id,
        name="Offline",
        require_check_in=True,
        check_in_interval="month",
        check_in_interval_count=1,
    )
    policy = policies.create_policy(uows, clock, s.ADMIN, terms)
    return licenses.create_license(uows, clock, s.ADMIN, NewLicense(policy.id)).id


def _check_in(container: s.Container, path: Path, license_id: str, n: int) -> float:
    service = container.checkins()
    at = container.clock.now().isoformat()
    records = tuple(RawUsageRecord(str(uuid.uuid4()), 1, at) for _ in range(n))
    start = time.perf_counter()
    outcome = service.check_in(s.ADMIN, CheckIn(license_id, records))
    elapsed = time.perf_counter() - start
    assert all(r.status.value == "accepted" for r in outcome.results)
    return elapsed


def _raw(container: s.Container, path: Path, license_id: str, n: int) -> float:
    container.dispose()  # the file is the raw driver's alone while it is measured
    conn = raw_connection(path)
    cur = conn.cursor()
    sink = s.SINKS[0].name
    try:
        start = time.perf_counter()
        # The text SQLAlchemy's SQLite DateTime stores: naive UTC with microseconds.
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        ledger, outbox, rows = [], [], []
        cur.execute("BEGIN IMMEDIATE")
        for _ in range(n):
            record_id, entry_id = str(uuid.uuid4()), str(uuid.uuid4())
            cur.execute(UPDATE, {"delta": 1, "now": now, "id": license_id})
            got = cur.fetchone()
            if got is None:
                raise RuntimeError("record rejected")
            after = got[0]
            entry = (entry_id, license_id, "increment", 1, after - 1, after, s.ADMIN.actor)
            ledger.append((*entry, record_id, None, now))
            outbox.append((entry_id, sink, now, now))
            rows.append((record_id, license_id, 1, now, entry_id, None, False, now))
        cur.executemany(LEDGER, ledger)
        cur.executemany(OUTBOX, outbox)
        cur.executemany(RECORD, rows)
        cur.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _increments(container: s.Container, path: Path, license_id: str, n: int) -> float:
    service = container.usage()
    start = time.perf_counter()
    for _ in range(n):
        service.apply(s.ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
    return time.perf_counter() - start


def _check(path: Path, n: int, records: bool) -> None:
    """The counter, the ledger's increments, the outbox and the records agree."""
    conn = sqlite3.connect(path)
    try:
        uses = conn.execute("SELECT sum(uses) FROM licenses").fetchone()[0]
        entries = conn.execute(
            "SELECT count(*) FROM usage_ledger WHERE kind = 'increment'"
        ).fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    finally:
        conn.close()
    if not (uses == entries == pending == n and stored == (n if records else 0)):
        raise SystemExit(f"inconsistent: uses={uses} ledger={entries} outbox={pending} {stored=}")


Side = Callable[[s.Container, Path, str, int], float]
SIDES: dict[str, tuple[Side, bool]] = {  # the side, and whether it writes record rows
    "check-in": (_check_in, True),
    "raw": (_raw, True),
    "increments": (_increments, False),
}
LABELS = {
    "check-in": "bridge: one check-in of the batch (CheckInService.check_in)",
    "raw": "baseline: raw sqlite3, the same writes, one transaction",
    "increments": "reference, not a baseline: one-by-one UsageService.apply, durable each",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure("warning", "console")
    s.context_line()
    seconds: dict[str, list[float]] = {name: [] for name in SIDES}
    names = list(SIDES)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            side, records = SIDES[name]
            with s.scratch_dir() as tmp:
                path = tmp / "bench.db"
                container = s.container_for(s.sqlite_url(path))
                try:
                    license_id = _license(container)
                    seconds[name].append(side(container, path, license_id, args.batch))
                finally:
                    container.dispose()
                _check(path, args.batch, records)
    for name, runs in seconds.items():
        best = min(runs)
        print(
            f"{LABELS[name]}\n    {args.batch} uses in {best:.3f} s (best of {len(runs)}): "
            f"{args.batch / best:,.0f} uses/s"
        )
    bridge, raw, one_by_one = (min(seconds[n]) for n in names)
    print(f"check-in / raw sqlite3 (the baseline): {raw / bridge:.2f}x the uses per second")
    print(f"check-in / one-by-one increments (reference): {one_by_one / bridge:.1f}x")


if __name__ == "__main__":
    main()
