"""Durable increments per second through the store on PostgreSQL, next to raw ``psycopg``.

bridge: ``UsageService.apply`` (admin principal, one outbox sink) in each of 4 worker processes,
        each with the engine ``bridge.bootstrap.build`` makes (SQLAlchemy + psycopg 3).
raw:    4 worker processes, one psycopg connection each, autocommit off, one transaction per
        increment: the conditional counter UPDATE ... RETURNING, the ledger INSERT and the
        outbox INSERT, each sent as a server-side prepared statement, then COMMIT.

Two workloads: 1,000 licenses with a random one per increment, and one hot license that every
increment hits (row-lock contention). No maxUses, so no increment is rejected. The schema comes
from the bridge's own migrations in a scratch ``bench_<random>`` database, dropped at the end;
the ledger and outbox are emptied and the counters zeroed before each measurement.

    python bench/store_postgres.py [--seconds 3] [--rounds 2] [--ops N] [--workers 4]
                                   [--pg-url URL]
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import _setup as s
import psycopg
from sqlalchemy import text

from bridge.domain.errors import INT4_MAX
from bridge.domain.model import UsageKind
from bridge.service.usage import UsageChange
from bridge.store.engine import make_engine
from bridge.store.migrate import upgrade

TARGET = 0.8

_MAX = (
    "coalesce(nullif(licenses.max_uses_override, 0), "
    "(SELECT policies.max_uses FROM policies WHERE policies.id = licenses.policy_id))"
)
UPDATE = (
    "UPDATE licenses SET uses = uses + %(delta)s, updated = %(now)s "
    f"WHERE id = %(id)s AND uses + %(delta)s >= 0 AND uses + %(delta)s <= {INT4_MAX} "
    f"AND ({_MAX} IS NULL OR uses + %(delta)s <= {_MAX}) RETURNING uses"
)
LEDGER = (
    "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, actor, "
    "idempotency_key, request_id, occurred_at) "
    "VALUES (%s, %s, 'increment', %s, %s, %s, %s, NULL, NULL, %s)"
)
OUTBOX = (
    "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
    "VALUES (%s, %s, 'pending', 0, %s, %s)"
)


def make_worker(i: int, params: dict[str, Any]) -> s.Worker:
    """One worker process's increment (module level: the spawned process imports it)."""
    ids: list[str] = params["ids"]
    rng = random.Random(i)
    if params["side"] == "bridge":
        container = s.container_for(params["url"], migrate=False)
        usage = container.usage()

        def bridge_op() -> None:
            usage.apply(s.ADMIN, UsageChange(rng.choice(ids), UsageKind.INCREMENT, 1))

        return bridge_op, container.dispose

    conn = psycopg.connect(params["conninfo"], autocommit=False)
    cur = conn.cursor()
    actor = s.ADMIN.actor
    sink = s.SINKS[0].name

    def raw_op() -> None:
        license_id = rng.choice(ids)
        now = datetime.now(UTC)
        entry_id = str(uuid.uuid4())
        try:
            cur.execute(UPDATE, {"delta": 1, "now": now, "id": license_id}, prepare=True)
            got = cur.fetchone()
            if got is None:
                raise RuntimeError("increment rejected")
            after = got[0]
            entry = (entry_id, license_id, 1, after - 1, after, actor, now)
            cur.execute(LEDGER, entry, prepare=True)
            cur.execute(OUTBOX, (entry_id, sink, now, now), prepare=True)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    return raw_op, conn.close


def reset(url: str) -> None:
    """The same starting point for every measurement."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE usage_ledger, outbox RESTART IDENTITY"))
            conn.execute(text("UPDATE licenses SET uses = 0"))
        with engine.connect() as plain:
            auto = plain.execution_options(isolation_level="AUTOCOMMIT")
            auto.execute(text("VACUUM ANALYZE licenses"))
            auto.execute(text("CHECKPOINT"))
    finally:
        engine.dispose()


def check(url: str, expected: int) -> None:
    """Every counted increment is in the counters, the ledger and the outbox."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            uses = conn.execute(text("SELECT coalesce(sum(uses), 0) FROM licenses")).scalar_one()
            entries = conn.execute(text("SELECT count(*) FROM usage_ledger")).scalar_one()
            pending = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    finally:
        engine.dispose()
    if not uses == entries == pending >= expected:
        raise SystemExit(f"inconsistent store: uses={uses} ledger={entries} outbox={pending}")


def server_line(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
            fsync = conn.execute(text("SHOW fsync")).scalar_one()
    finally:
        engine.dispose()
    print(f"PostgreSQL {version}, synchronous_commit={sync}, fsync={fsync}")


LABELS = {"raw": "raw psycopg", "bridge": "bridge UsageService.apply"}


def compare(
    team: s.ProcessTeam, url: str, ids: list[str], title: str, args: argparse.Namespace
) -> str:
    budget = s.budget_from(args)
    base = {"url": url, "conninfo": s.libpq_conninfo(url), "ids": ids}
    s.header(f"PostgreSQL store, {title}, {args.workers} processes")
    got: dict[str, list[s.Result]] = {"raw": [], "bridge": []}
    for r in range(args.rounds):
        for side in ("raw", "bridge") if r % 2 == 0 else ("bridge", "raw"):
            reset(url)
            label = f"{LABELS[side]} x{args.workers} (round {r + 1})"
            params = {**base, "side": side}
            result = team.measure(label, make_worker, params, budget)
            s.row(result)
            check(url, result.ops)
            got[side].append(result)
    if args.rounds > 1:
        print()
        for side, results in got.items():
            s.row(s.merge(f"{LABELS[side]} x{args.workers} (all rounds)", results))
    bridge = s.merge("bridge", got["bridge"])
    raw = s.merge("raw", got["raw"])
    return s.ratio(f"PostgreSQL {title}", bridge, raw, TARGET)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    s.add_budget_args(parser, seconds=3.0, warmup=1.0)
    parser.add_argument("--workers", type=int, default=4, help="processes per side (4)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (2)")
    parser.add_argument("--licenses", type=int, default=1000)
    parser.add_argument(
        "--pg-url", default=None, help=f"server to use (${s.PG_ENV} or {s.DEFAULT_PG_URL})"
    )
    args = parser.parse_args(argv)

    with s.scratch_pg(s.pg_base_url(args.pg_url)) as url:
        engine = make_engine(url)
        upgrade(engine)  # the bridge's migrations: both sides write the same tables
        engine.dispose()
        container = s.container_for(url, migrate=False)
        ids = s.seed(container, args.licenses)
        container.dispose()
        s.context_line()
        server_line(url)
        print(f"scratch database {url.rsplit('/', 1)[-1]}, sink 'bench', no maxUses")
        with s.ProcessTeam(args.workers) as team:
            lines = [
                compare(team, url, ids, f"{args.licenses} licenses, random", args),
                compare(team, url, ids[:1], "one hot license", args),
            ]

    print("\nSummary (target: bridge >= 0.8x raw)")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
