"""Offline usage records applied per second by a check-in, next to the same uses applied online.

bridge:   ``CheckInService.check_in`` with a batch of ``--batch`` records (1,000, the most one
          request takes) on one license of a check-in policy, one outbox sink: one transaction
          per batch, each record in a savepoint (its id looked up, the counter, the ledger, the
          outbox and the record row).
baseline: the same number of uses as single increments through ``UsageService.apply`` (what a
          client that is online sends), each a durable transaction of its own.

Both on one fresh SQLite file (WAL, synchronous=FULL) per round; the sides alternate.

    python bench/checkin.py [--batch 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
import uuid

import _setup as s

from bridge.domain.commands import CheckIn, NewLicense, NewPolicy, NewProduct, RawUsageRecord
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.usage import UsageChange


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


def _check_in(container: s.Container, license_id: str, n: int) -> float:
    service = container.checkins()
    at = container.clock.now().isoformat()
    records = tuple(RawUsageRecord(str(uuid.uuid4()), 1, at) for _ in range(n))
    start = time.perf_counter()
    outcome = service.check_in(s.ADMIN, CheckIn(license_id, records))
    elapsed = time.perf_counter() - start
    assert all(r.status.value == "accepted" for r in outcome.results)
    return elapsed


def _increments(container: s.Container, license_id: str, n: int) -> float:
    service = container.usage()
    start = time.perf_counter()
    for _ in range(n):
        service.apply(s.ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides = {"check-in": _check_in, "increments": _increments}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            with s.scratch_dir() as tmp:
                container = s.container_for(s.sqlite_url(tmp / "bench.db"))
                try:
                    seconds[name].append(sides[name](container, _license(container), args.batch))
                finally:
                    container.dispose()
    for name, runs in seconds.items():
        best = min(runs)
        print(
            f"{name:>10}: {args.batch} uses in {best:.3f} s (best of {len(runs)}): "
            f"{args.batch / best:,.0f} uses/s"
        )
    ratio = min(seconds["increments"]) / min(seconds["check-in"])
    print(f"check-in / one-by-one increments: {ratio:.1f}x the uses per second")


if __name__ == "__main__":
    main()
