"""Machine activations per second over HTTP, next to usage increments on the same server and run.

The server is the stack ``meterbridge serve`` runs (started by ``bench/http_api.py``'s
``server``: uvicorn and the app ``bridge.bootstrap.build_app`` builds, SQLite in WAL mode with
``synchronous=FULL``, one process, one outbox sink). ``--licenses`` licenses of one floating
policy without machine or core limits are seeded; 32 keep-alive connections (``--connections``)
then send, for ``--seconds`` each and alternating between rounds:

- activations: ``POST /v1/machines`` with a fresh fingerprint and 2 cores on a random license
  (license lock, fingerprint and tally reads, the policy, the machine, a ledger entry and an
  outbox row, in a savepoint of a BatchWriter batch: group commit, as increments; served by
  the same fast path as the usage actions, ahead of FastAPI);
- increments: ``POST /v1/licenses/{id}/actions/increment-usage`` on a random license (the usage
  fast path, grouped by the BatchWriter).

It prints requests per second with p50/p99 latency per measurement and the ratio, and checks
that every 201 left a machine and a ledger entry. It never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
import uuid
from array import array
from collections import Counter
from pathlib import Path

import _setup as s
import http_api

from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.service import licenses, policies, products

HOST = http_api.HOST


Load = http_api.Load
row = http_api.row


def seed(db: Path, count: int) -> list[str]:
    """One floating policy without limits and ``count`` licenses, through the use cases."""
    container = s.container_for(s.sqlite_url(db))
    uows, clock = container.uows, container.clock
    product = products.create_product(uows, clock, s.ADMIN, NewProduct(name="Bench"))
    attrs = {"name": "Floating", "floating": True}
    policy = policies.create_policy(uows, clock, s.ADMIN, NewPolicy(product.id, **attrs))
    ids = [
        licenses.create_license(uows, clock, s.ADMIN, NewLicense(policy.id)).id
        for _ in range(count)
    ]
    container.dispose()
    return ids


def _request(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {s.ADMIN_TOKEN}\r\nContent-Type: application/vnd.api+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def activation(port: int, ids: list[str]) -> http_api.Requests:
    def make(rng: random.Random) -> bytes:
        body = {
            "data": {
                "type": "machines",
                "attributes": {"fingerprint": str(uuid.uuid4()), "cores": 2},
                "relationships": {"license": {"data": {"type": "licenses", "id": rng.choice(ids)}}},
            }
        }
        return _request(port, "/v1/machines", json.dumps(body).encode())

    return make


def increment(port: int, ids: list[str]) -> http_api.Requests:
    def make(rng: random.Random) -> bytes:
        return _request(port, f"/v1/licenses/{rng.choice(ids)}/actions/increment-usage", b"")

    return make


def drive(
    label: str,
    port: int,
    make: http_api.Requests,
    seconds: float,
    connections: int,
) -> tuple[Load, Counter[int]]:
    lat: array[float] = array("d")
    codes: Counter[int] = Counter()

    async def main() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(
                http_api.connection(port, make, deadline, None, lat, codes)
                for _ in range(connections)
            )
        )
        return time.perf_counter() - start

    try:
        import uvloop

        elapsed = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        elapsed = asyncio.run(main())
    ordered = sorted(lat) or [0.0]
    ok = sum(n for code, n in codes.items() if 200 <= code < 300)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    return Load(label, len(lat), elapsed, len(lat) - ok, pct(50), pct(99)), codes


def counts(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        machines = conn.execute("SELECT count(*) FROM machines").fetchone()[0]
        entries = conn.execute(
            "SELECT count(*) FROM usage_ledger WHERE kind = 'activate'"
        ).fetchone()[0]
        return int(machines), int(entries)
    finally:
        conn.close()


def bench(args: argparse.Namespace) -> None:
    with s.scratch_dir(args.dir) as folder:
        args.folder = str(folder)
        db = folder / "bridge.db"
        ids = seed(db, args.licenses)
        hold = s.prime_sqlite_wal(db)
        s.context_line()
        print(
            f"server: uvicorn + bridge app on SQLite (WAL, synchronous=FULL), 1 process; "
            f"client: asyncio, {args.connections} connections; {args.licenses} licenses, "
            "sink 'bench'"
        )
        totals: dict[str, list[Load]] = {"activate": [], "increment": []}
        with http_api.server(s.sqlite_url(db), args) as port:
            sides = {"activate": activation(port, ids), "increment": increment(port, ids)}
            print(
                f"\n{'measurement':<36} {'requests':>8} {'secs':>6} {'req/s':>9} "
                f"{'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>6}"
            )
            activated = 0
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for name in order:
                    _, warm_codes = drive("warm-up", port, sides[name], args.warmup, 4)
                    load, codes = drive(
                        f"{name} (round {r + 1})", port, sides[name], args.seconds, args.connections
                    )
                    row(load)
                    totals[name].append(load)
                    if name == "activate":
                        activated += codes[201] + warm_codes[201]
            machines, entries = counts(db)
        hold.close()
    if machines != activated or entries != activated:
        raise SystemExit(f"{activated} activations answered 201 but {machines} machines exist")
    act = http_api._total("activate", totals["activate"])
    inc = http_api._total("increment", totals["increment"])
    print(f"\nSummary ({args.connections} connections, {args.rounds} round(s))")
    print(f"  activations: {act.rate:.1f} /s (p50 {act.p50_ms:.2f} ms, p99 {act.p99_ms:.2f} ms)")
    print(f"  increments:  {inc.rate:.1f} /s (p50 {inc.p50_ms:.2f} ms, p99 {inc.p99_ms:.2f} ms)")
    print(f"  activations/increments = {act.rate / inc.rate:.2f}x")
    print(
        f"  check: {machines} machines and {entries} activation ledger entries for {activated} 201s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each (2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--licenses", type=int, default=1000)
    parser.add_argument("--log-level", default="info", help="uvicorn's, as serve uses (info)")
    parser.add_argument("--lifetime", type=float, default=600.0, help="server's hard stop (s)")
    parser.add_argument("--dir", default=None, help="where the scratch database goes (on disk)")
    bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
