"""Relay memory while a large backlog drains: it must stay flat (streamed, never loaded at once).

A SQLite store is filled with ``N`` ledger entries and their pending outbox rows (default
1,000,000, written with plain ``executemany`` so the fill is quick), then the relay drains them
into a sink that only counts (so the sink holds no memory of its own). The resident set size of
this process is printed at the start, every tenth of the way and at the end, with the drain rate.
There is no baseline to compare with: the figure is how much the RSS grows while ``N`` items pass.

    python bench/relay_backlog.py [--events 1000000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import _setup as s

from bridge.domain.delivery import ItemFailure, LicenseFacts, OutboxItem
from bridge.domain.model import UsageEntry
from bridge.logging import configure
from bridge.service.relay import Relay, RelayPolicy


class CountingSink:
    name = "count"

    def __init__(self) -> None:
        self.count = 0

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool:
        return True

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        self.count += len(items)
        return ()


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def fill(path: str, events: int, license_id: str) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(path)
    chunk = 50_000
    for start in range(0, events, chunk):
        ids = [str(uuid.uuid4()) for _ in range(min(chunk, events - start))]
        conn.executemany(
            "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, "
            "actor, occurred_at) VALUES (?, ?, 'increment', 1, 0, 1, 'admin:bench', ?)",
            [(i, license_id, when) for i in ids],
        )
        conn.executemany(
            "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
            "VALUES (?, 'count', 'pending', 0, ?, ?)",
            [(i, when, when) for i in ids],
        )
        conn.commit()
    conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    configure("warning")
    with s.scratch_dir() as folder:
        path = folder / "backlog.db"
        container = s.container_for(s.sqlite_url(path))
        (license_id,) = s.seed(container, 1)
        started = time.perf_counter()
        fill(str(path), args.events, license_id)
        print(f"filled {args.events} pending items in {time.perf_counter() - started:.1f} s")

        sink = CountingSink()
        relay = Relay(container.uows, [sink], container.clock, RelayPolicy(batch_size=args.batch))
        s.context_line()
        print(f"{'delivered':>10} {'rss MB':>8} {'items/s':>9}")
        start_rss, peak = rss_mb(), 0.0
        print(f"{0:>10} {start_rss:>8.1f} {'':>9}")
        started, step = time.perf_counter(), max(1, args.events // 10)
        next_report = step
        while sum(r.handled for r in relay.run_once().values()):
            peak = max(peak, rss_mb())
            if sink.count >= next_report:
                rate = sink.count / (time.perf_counter() - started)
                print(f"{sink.count:>10} {rss_mb():>8.1f} {rate:>9.0f}")
                next_report += step
        elapsed = time.perf_counter() - started
        container.dispose()
    print(
        f"drained {sink.count} items in {elapsed:.1f} s ({sink.count / elapsed:.0f}/s); "
        f"RSS {start_rss:.1f} MB at the start, {peak:.1f} MB at the peak "
        f"(+{peak - start_rss:.1f} MB)"
    )


if __name__ == "__main__":
    main()
