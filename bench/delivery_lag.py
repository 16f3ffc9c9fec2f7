"""End-to-end delivery lag: increment accepted -> acknowledged by a fake Lago, at a steady rate.

One thread submits increments at a fixed rate (default 1,000/s, paced against the clock) to the
``BatchWriter``, the path HTTP requests take on SQLite, and each is recorded as accepted when
its transaction commits (its future resolves); the relay
(``Relay`` + ``LagoSink``, as ``meterbridge serve`` runs it) drains the outbox in another thread
into the fake Lago of ``tests/fakes/lago.py``, which records when it stored each
``transaction_id``. The lag of a change is the second time minus the first. Printed: the rate
achieved and the lag's p50, p99 and maximum. The issue's target: p99 under 2 s at 1,000/s.

    python bench/delivery_lag.py [--rate 1000] [--seconds 20] [--idle 0.05]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import _setup as s
import httpx

from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service import licenses, policies, products
from bridge.service.batch_writer import BatchWriter
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageChange, UsageOutcome, UsageService
from connectors.lago import LagoSink, LagoSinkSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fakes live in tests/
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago

KEY = "bench-lago-key"


class TimedLago(FakeLago):
    """The fake Lago, noting when each transaction id was stored (acknowledged)."""

    def __init__(self) -> None:
        super().__init__(KEY)
        self.acked: dict[str, float] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        now = time.perf_counter()
        for txn in self.ingested[len(self.acked) :]:
            self.acked[txn] = now
        return response


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(rate: float, seconds: float, idle: float) -> None:
    with s.scratch_dir() as folder:
        store = s.container_for(s.sqlite_url(folder / "lag.db"))
        product = products.create_product(store.uows, store.clock, s.ADMIN, NewProduct(name="p"))
        policy = policies.create_policy(
            store.uows, store.clock, s.ADMIN, NewPolicy(product.id, name="p")
        )
        attrs: dict[str, Any] = {"metadata": {"lago_subscription_id": "sub_1"}}
        lic = licenses.create_license(
            store.uows, store.clock, s.ADMIN, NewLicense(policy.id, **attrs)
        )
        usage = UsageService(store.usage_uows, store.clock, ["lago"])
        writer = BatchWriter(store.usage_uows, usage)
        lago = TimedLago()
        settings = LagoSinkSettings(enabled=True, api_key=KEY, default_metric_code="calls")
        sink = LagoSink(settings, client=lago.client())
        relay = Relay(store.uows, [sink], store.clock, RelayPolicy(idle_s=idle))
        stop = threading.Event()
        relay_thread = threading.Thread(target=relay.run, args=(stop,))
        relay_thread.start()

        accepted: dict[str, float] = {}

        def on_commit(future: Future[UsageOutcome]) -> None:
            accepted[future.result().entry_id] = time.perf_counter()

        change = UsageChange(lic.id, UsageKind.INCREMENT, 1)
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            due = start + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing the load, not synchronizing a test
            writer.submit(s.ADMIN, change).add_done_callback(on_commit)
        writer.close()  # every submitted change is committed
        offered = time.perf_counter() - start
        deadline = time.perf_counter() + 30
        while len(lago.acked) < total and time.perf_counter() < deadline:
            time.sleep(0.01)
        stop.set()
        relay_thread.join()
        store.dispose()

    lags = [lago.acked[i] - t for i, t in accepted.items() if i in lago.acked]
    s.context_line()
    print(
        f"{total} increments in {offered:.1f} s ({total / offered:.0f}/s accepted); "
        f"{len(lags)} acknowledged by the fake Lago; relay idle pause {idle} s"
    )
    print(
        f"lag p50 {percentile(lags, 0.50) * 1000:.0f} ms, "
        f"p99 {percentile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
        f"(target: p99 < 2000 ms)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle", type=float, default=0.5, help="relay idle pause (serve: 0.5)")
    args = parser.parse_args(argv)
    if not LAGO_SPEC.exists():
        raise SystemExit(SPEC_MISSING)
    configure("warning")
    bench(args.rate, args.seconds, args.idle)


if __name__ == "__main__":
    main()
