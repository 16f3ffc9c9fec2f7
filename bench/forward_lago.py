"""Forwarding throughput: the outbox relay draining into a fake Lago, next to raw httpx.

bridge: ``N`` increments are accepted through ``UsageService`` (each writes its outbox row for
the ``lago`` sink); then the relay (``bridge.service.relay.Relay`` with
``connectors.lago.LagoSink``, batches of 100) drains them: claim a batch under a lease, map
each item to a Lago event, POST it, mark the batch delivered. The clock starts after the
increments.

raw: the same ``N`` events, already mapped, POSTed in batches of 100 by one ``httpx.Client`` to
another fake Lago: no database, no mapping. Both sides talk to the fake through the same
in-process transport (``httpx.MockTransport``), so the fake's own cost (spec validation,
deduplication) is included on both sides, and no socket is involved. With ``--http`` both
sides reach their fake over real HTTP instead: each fake is served on a loopback port by a
thread of this process (``tests.fakes.loopback.LoopbackServer``), so both also pay for the
sockets, the HTTP parsing and the server thread's share of the GIL.

    python bench/forward_lago.py [--events 20000] [--batch 100] [--http]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import _setup as s
import httpx

from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service import licenses, policies, products
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageChange, UsageService
from connectors.lago import LagoSink, LagoSinkSettings, event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fakes live in tests/
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer

KEY = "bench-lago-key"
TARGET = 10_000.0  # events/s, from the issue


def _settings(batch: int, api_url: str = "https://api.getlago.com") -> LagoSinkSettings:
    return LagoSinkSettings(
        enabled=True,
        api_url=api_url,
        api_key=KEY,
        default_metric_code="api_calls",
        batch_size=batch,
    )


@contextmanager
def lago_url(fake: FakeLago, http: bool) -> Iterator[tuple[str, httpx.Client]]:
    """The fake's base URL and a client that reaches it: in process, or over loopback HTTP."""
    if not http:
        with fake.client() as client:
            yield "https://api.getlago.com", client
        return
    with LoopbackServer(fake) as server, httpx.Client() as client:
        yield server.url, client


def bench(events: int, batch: int, licenses_n: int, http: bool) -> None:
    with s.scratch_dir() as folder:
        container = s.container_for(s.sqlite_url(folder / "forward.db"))
        store = container
        product = products.create_product(store.uows, store.clock, s.ADMIN, NewProduct(name="p"))
        policy = policies.create_policy(
            store.uows, store.clock, s.ADMIN, NewPolicy(product.id, name="p")
        )
        ids = [
            licenses.create_license(
                store.uows,
                store.clock,
                s.ADMIN,
                NewLicense(policy.id, metadata={"lago_subscription_id": f"sub-{n}"}),
            ).id
            for n in range(licenses_n)
        ]
        usage = UsageService(store.usage_uows, store.clock, ["lago"])
        for n in range(events):
            usage.apply(s.ADMIN, UsageChange(ids[n % licenses_n], UsageKind.INCREMENT, 1))

        # The raw side's events, mapped before any clock starts (a lease of zero leaves the
        # items claimable, so the relay below still finds all of them).
        with store.uows() as uow:
            claimed = uow.outbox.claim("lago", store.clock.now(), store.clock.now(), events)
        bodies = [event(item, _settings(batch)) for item in claimed]

        # bridge: the relay drains the outbox into the fake.
        fake = FakeLago(KEY)
        with lago_url(fake, http) as (base, client):
            sink = LagoSink(_settings(batch, base), client=client)
            relay = Relay(store.uows, [sink], store.clock, RelayPolicy(batch_size=batch))
            gc.collect()  # the setup's garbage is collected before the clock, not during it
            start = time.perf_counter()
            while sum(r.handled for r in relay.run_once().values()):
                pass
            bridge_s = time.perf_counter() - start
        assert len(fake.ingested) == events, (len(fake.ingested), events)
        assert not fake.violations, fake.violations[:3]

        # raw: the same events, mapped beforehand, posted in the same batches.
        raw_fake = FakeLago(KEY)
        headers = {"Authorization": f"Bearer {KEY}"}
        with lago_url(raw_fake, http) as (base, client):
            url = f"{base}/api/v1/events/batch"
            gc.collect()
            start = time.perf_counter()
            for i in range(0, len(bodies), batch):
                response = client.post(url, json={"events": bodies[i : i + batch]}, headers=headers)
                response.raise_for_status()
            raw_s = time.perf_counter() - start
        assert len(raw_fake.ingested) == events
        container.dispose()

    bridge_rate, raw_rate = events / bridge_s, events / raw_s
    s.context_line()
    transport = "HTTP on loopback" if http else "in process (httpx.MockTransport)"
    print(f"{events} events, batches of {batch}, {licenses_n} licenses, SQLite store")
    print(f"fake Lago reached {transport}")
    print(f"  bridge relay -> fake Lago : {bridge_rate:10.0f} events/s ({bridge_s:.2f} s)")
    print(f"  raw httpx    -> fake Lago : {raw_rate:10.0f} events/s ({raw_s:.2f} s)")
    print(f"  bridge/raw = {bridge_rate / raw_rate:.2f}x")
    verdict = "meets" if bridge_rate >= TARGET else "BELOW"
    print(f"  target >= {TARGET:.0f} events/s: {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--licenses", type=int, default=100)
    parser.add_argument("--http", action="store_true", help="reach the fakes over loopback HTTP")
    args = parser.parse_args(argv)
    if not LAGO_SPEC.exists():
        raise SystemExit(SPEC_MISSING)
    configure("warning")  # as a service runs: no line per delivered batch on the terminal
    bench(args.events, args.batch, args.licenses, args.http)


if __name__ == "__main__":
    main()
