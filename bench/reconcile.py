"""Reconciling N ledger entries (default 1,000,000) against a fake Lago, with bounded memory.

A SQLite store is filled with plain SQL: ``--licenses`` licenses (default 10,000), each with its
own Lago subscription, ``N / licenses`` increments in January, their delivered outbox rows and
one closed January period. The fake platform answers ``GET /api/v1/events`` from a dict with
pages built once (so it costs little next to the bridge), holding every event.

- **baseline**: the least a reconciliation can do: stream the ledger's entry ids and deltas
  for the window in one query, ask the platform once per license, compare the sets. No
  outbox, no findings written, no period bounds.
- **bridge**: ``meterbridge reconcile --period 2026-01`` as a call: every closed period against
  the ledger, the outbox and the platform, findings stored.

Both must report zero discrepancies. Prints time, entries per second and the peak RSS of this
process after each run (the bridge's must not grow with N: it reads a batch of periods at a time).

    python bench/reconcile.py [--entries 1000000] [--licenses 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import _setup as s
import httpx
from pydantic import SecretStr

from bridge.domain.reconcile import Window
from bridge.logging import configure
from bridge.service.reconcile import Reconciler
from bridge.store.licenses import key_digest
from bridge.testing import FakeClock
from connectors.lago import LagoSink, LagoSinkSettings
from connectors.lago.reader import LagoReader

JAN = datetime(2026, 1, 1, tzinfo=UTC)
PAGE = 1000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def text_ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def seed(path: str, entries: int, licenses: int) -> dict[str, list[dict[str, Any]]]:
    """Fill the store; returns the platform's events by subscription (what Lago holds)."""
    per = entries // licenses
    db = sqlite3.connect(path)
    created = text_ts(JAN - timedelta(days=30))
    db.execute(
        "INSERT INTO products (id, name, metadata, created, updated) "
        "VALUES ('prod', 'Bench', '{}', ?, ?)",
        (created, created),
    )
    db.execute(
        "INSERT INTO policies (id, product_id, name, max_machines, floating, strict, "
        "overage_strategy, protected, expiration_basis, usage_period, metadata, created, "
        "updated) VALUES ('pol', 'prod', 'Monthly', 1, 0, 0, 'NO_OVERAGE', 0, 'FROM_CREATION', "
        "?, '{}', ?, ?)",
        ('{"interval":"month","count":1,"anchor":"CALENDAR","timezone":"UTC"}', created, created),
    )
    platform: dict[str, list[dict[str, Any]]] = defaultdict(list)
    feb, mar = text_ts(JAN.replace(month=2)), text_ts(JAN.replace(month=3))
    for n in range(licenses):
        lic, sub = f"lic-{n:08d}", f"sub-{n:08d}"
        db.execute(
            "INSERT INTO licenses (id, key, key_digest, policy_id, uses, protected, suspended, "
            "metadata, created, updated, period_start, period_end, period_open_uses) "
            "VALUES (?, ?, ?, 'pol', 0, 0, 0, ?, ?, ?, ?, ?, 0)",
            (
                lic,
                f"key-{n:08d}",
                key_digest(f"key-{n:08d}"),
                json.dumps({"lago_subscription_id": sub}),
                created,
                created,
                feb,
                mar,
            ),
        )
        rows, outbox = [], []
        for k in range(per):
            entry = f"e-{n:08d}-{k:05d}"
            at = JAN + timedelta(days=k % 28, seconds=n % 86_400, microseconds=k)
            rows.append((entry, lic, k + 1, text_ts(at)))
            outbox.append((entry, text_ts(at)))
            seconds = at.timestamp()
            platform[sub].append(
                {
                    "lago_id": entry,
                    "transaction_id": entry,
                    "lago_customer_id": None,
                    "code": "api_calls",
                    "timestamp": datetime.fromtimestamp(int(seconds * 1000) / 1000, UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "properties": {"units": 1},
                    "lago_subscription_id": None,
                    "external_subscription_id": sub,
                }
            )
        db.executemany(
            "INSERT INTO usage_ledger (id, license_id, kind, delta, uses_before, uses_after, "
            "actor, occurred_at) VALUES (?, ?, 'increment', 1, ?, 0, 'bench', ?)",
            [(e, lic, k, at) for e, lic, k, at in rows],
        )
        db.executemany(
            "INSERT INTO outbox (entry_id, sink, status, attempts, next_attempt_at, created) "
            "VALUES (?, 'lago', 'delivered', 1, ?, ?)",
            [(e, at, at) for e, at in outbox],
        )
        db.execute(
            "INSERT INTO usage_periods (license_id, period_start, period_end, uses_at_open, "
            "uses_at_close, increments, decrements, resets, entries, reset_entry_id, closed_by, "
            "closed_at) VALUES (?, ?, ?, 0, ?, ?, 0, 0, ?, ?, 'scheduler', ?)",
            (lic, text_ts(JAN), feb, per, per, per, f"r-{n}", feb),
        )
    db.commit()
    db.close()
    return platform


class FakeLagoEvents:
    """``GET /api/v1/events`` over prebuilt pages (spec ``EventsPaginated``)."""

    def __init__(self, events: dict[str, list[dict[str, Any]]]) -> None:
        self.events = events
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        params = request.url.params
        found = self.events.get(params["external_subscription_id"], [])
        page, per_page = int(params.get("page", 1)), int(params.get("per_page", 100))
        pages = max(1, -(-len(found) // per_page))
        meta = {
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": pages,
            "total_count": len(found),
        }
        chunk = found[(page - 1) * per_page : page * per_page]
        return httpx.Response(200, json={"events": chunk, "meta": meta})


def baseline(path: str, client: httpx.Client) -> tuple[int, int]:
    """Stream (license, entry, delta) ordered by license; one platform read per license."""
    db = sqlite3.connect(path)
    metadata = dict(db.execute("SELECT id, metadata FROM licenses"))
    cursor = db.execute(
        "SELECT license_id, id FROM usage_ledger WHERE occurred_at >= ? AND occurred_at < ? "
        "ORDER BY license_id",
        (text_ts(JAN), text_ts(JAN.replace(month=2))),
    )
    checked = discrepancies = 0
    current: str | None = None
    ids: set[str] = set()

    def compare(license_id: str, local: set[str]) -> int:
        sub = json.loads(metadata[license_id])["lago_subscription_id"]
        remote: set[str] = set()
        page: int | None = 1
        while page is not None:
            body = client.get(
                "https://lago.bench/api/v1/events",
                params={"external_subscription_id": sub, "page": page, "per_page": PAGE},
            ).json()
            remote.update(e["transaction_id"] for e in body["events"])
            page = body["meta"]["next_page"]
        return len(local ^ remote)

    for license_id, entry_id in cursor:
        if license_id != current:
            if current is not None:
                discrepancies += compare(current, ids)
            current, ids = license_id, set()
        ids.add(entry_id)
        checked += 1
    if current is not None:
        discrepancies += compare(current, ids)
    db.close()
    return checked, discrepancies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--licenses", type=int, default=10_000)
    args = parser.parse_args()
    configure("warning")
    with s.scratch_dir() as folder:
        path = str(folder / "reconcile.db")
        container = s.container_for(s.sqlite_url(path))
        container.dispose()
        started = time.perf_counter()
        platform = seed(path, args.entries, args.licenses)
        print(f"(seeded {args.entries:,} entries in {time.perf_counter() - started:.1f} s)")
        fake = FakeLagoEvents(platform)
        client = httpx.Client(transport=httpx.MockTransport(fake))
        print(f"peak RSS after seeding (the fake platform's data): {rss_mb():.0f} MB")

        started = time.perf_counter()
        checked, discrepancies = baseline(path, client)
        base = time.perf_counter() - started
        assert (checked, discrepancies) == (args.entries, 0), (checked, discrepancies)
        print(f"baseline: {base:6.1f} s  {checked / base:9,.0f} entries/s  RSS {rss_mb():.0f} MB")

        settings = LagoSinkSettings(
            enabled=True,
            api_key=SecretStr("bench"),
            api_url="https://lago.bench",
            default_metric_code="api_calls",
            read_page_size=PAGE,
        )
        container = s.container_for(s.sqlite_url(path), migrate=False)
        reconciler = Reconciler(
            container.uows,
            FakeClock(JAN.replace(month=2, day=3)),
            [LagoSink(settings, client=client)],  # its accepts() is the relay's own filter
            {"lago": LagoReader(settings, client)},
        )
        started = time.perf_counter()
        summary = reconciler.run(Window.parse("2026-01"))
        bridge = time.perf_counter() - started
        container.dispose()
        assert (summary.periods, summary.ok, summary.mismatched) == (args.licenses,) * 2 + (0,)
        print(
            f"bridge:   {bridge:6.1f} s  {args.entries / bridge:9,.0f} entries/s  "
            f"RSS {rss_mb():.0f} MB   ({base / bridge:.2f}x the baseline's rate)"
        )


if __name__ == "__main__":
    main()
