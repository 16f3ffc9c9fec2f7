"""The outbox relay: every accepted change reaches each sink, through outages and crashes."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import LicensePatch, NewLicense, NewPolicy, NewProduct
from bridge.domain.delivery import (
    OutboxItem,
    OutboxStatus,
    PermanentDeliveryError,
    TransientDeliveryError,
    backoff_seconds,
)
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.relay import Relay, RelayPolicy, outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from connectors.file import FileSink
from connectors.memory import InMemorySink
from tests.conftest import make_container

ADMIN = Principal(Role.ADMIN, "test")


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(db_url, clock)
    yield container
    container.dispose()


def changes(store: Container, sinks: Sequence[str], count: int) -> list[str]:
    """``count`` accepted increments on a fresh license; their ledger entry ids."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    lic = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id))
    usage = UsageService(store.usage_uows, store.clock, sinks)
    return [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).entry_id
        for _ in range(count)
    ]


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


def relay(store: Container, *sinks: InMemorySink | FileSink, **policy: float) -> Relay:
    return Relay(store.uows, sinks, store.clock, RelayPolicy(batch_size=4, **policy))


def drain(r: Relay) -> None:
    while any(result.handled for result in r.run_once().values()):
        pass


def test_every_change_reaches_every_sink_once(store: Container) -> None:
    """Ten changes, two sinks: each sink receives each entry id exactly once, in order."""
    ids = changes(store, ["a", "b"], 10)
    a, b = InMemorySink("a"), InMemorySink("b")
    drain(relay(store, a, b))
    assert list(a.received) == ids
    assert list(b.received) == ids
    assert a.deliveries == b.deliveries == 10
    assert counts(store) == {("a", "delivered"): 10, ("b", "delivered"): 10}
    drain(relay(store, a, b))  # nothing is sent twice
    assert a.deliveries == 10


def test_a_failing_sink_does_not_hold_up_the_others(store: Container, clock: FakeClock) -> None:
    """A sink in a transient outage is retried with backoff; the other sink keeps flowing."""
    ids = changes(store, ["down", "up"], 3)
    outage = True

    def fail(_items: Sequence[OutboxItem]) -> None:
        if outage:
            raise TransientDeliveryError("503 from the platform", retry_after=30)

    down, up = InMemorySink("down", fail), InMemorySink("up")
    r = relay(store, down, up)
    drain(r)
    assert list(up.received) == ids
    assert down.received == {}
    assert counts(store)[("down", "pending")] == 3
    outage = False
    drain(r)
    assert down.received == {}, "retried before Retry-After"
    clock.advance(seconds=31)
    drain(r)
    assert list(down.received) == ids


def test_permanent_errors_go_to_dead_letter(store: Container) -> None:
    """A permanent error dead-letters the batch with the platform's reason."""
    changes(store, ["strict"], 2)

    def reject(_items: Sequence[OutboxItem]) -> None:
        raise PermanentDeliveryError("422 unknown billable metric")

    drain(relay(store, InMemorySink("strict", reject)))
    assert counts(store) == {("strict", "dead"): 2}


def test_items_past_the_retry_horizon_are_dead_lettered(store: Container, clock: FakeClock) -> None:
    """A transient failure on an item older than the horizon dead-letters it instead of
    risking a double count outside the platform's dedupe window."""
    changes(store, ["slow"], 1)
    clock.advance(hours=2)

    def fail(_items: Sequence[OutboxItem]) -> None:
        raise TransientDeliveryError("timeout")

    drain(relay(store, InMemorySink("slow", fail), retry_horizon_s=3600))
    assert counts(store) == {("slow", "dead"): 1}


def test_a_crash_after_claiming_loses_nothing(store: Container, clock: FakeClock) -> None:
    """Items claimed by a relay that died are claimed again when the lease ends, with the same
    ids, so the platform counts them once."""
    ids = changes(store, ["s"], 3)
    with store.uows(write=True) as uow:  # a relay claims, then dies before delivering
        claimed = uow.outbox.claim("s", clock.now(), clock.now() + timedelta(seconds=60), 10)
        uow.commit()
    assert [i.entry.id for i in claimed] == ids
    sink = InMemorySink("s")
    r = relay(store, sink, lease_s=60)
    drain(r)
    assert sink.received == {}, "claimed again before the lease ended"
    clock.advance(seconds=61)
    drain(r)
    assert list(sink.received) == ids
    assert counts(store) == {("s", "delivered"): 3}


def test_whole_batches_are_recorded_delivered_by_the_next_pass_and_on_stop(
    store: Container,
) -> None:
    """A full batch's deliveries are recorded in the sink's next claim transaction: a drain
    of whole batches leaves nothing in flight, and so does ``run`` stopped right after one."""
    changes(store, ["s"], 8)  # two full batches of 4
    drain(relay(store, InMemorySink("s")))
    assert counts(store) == {("s", "delivered"): 8}

    changes(store, ["t"], 4)  # one full batch, then stop before any further pass
    stop = threading.Event()

    def stop_after(_items: Sequence[OutboxItem]) -> None:
        stop.set()

    sink = InMemorySink("t", stop_after)
    relay(store, sink).run(stop)
    assert len(sink.received) == 4
    assert counts(store)[("t", "delivered")] == 4
    assert ("t", "inflight") not in counts(store)


def test_a_relay_that_dies_holding_deliveries_resends_them_once(
    store: Container, clock: FakeClock
) -> None:
    """A relay killed after delivering a full batch, before its next claim recorded it: the
    batch is resent when the lease ends, with the same ids, and counted once."""
    ids = changes(store, ["s"], 4)
    sink = InMemorySink("s")
    relay(store, sink, lease_s=60).drain_once(sink)  # then the process dies
    assert counts(store) == {("s", "inflight"): 4}
    clock.advance(seconds=61)
    drain(relay(store, sink))
    assert list(sink.received) == ids
    assert sink.deliveries == 8  # sent twice, counted once by the platform's dedupe
    assert counts(store) == {("s", "delivered"): 4}


def test_a_sink_bug_is_retried_not_lost(store: Container) -> None:
    """An unexpected exception from a sink reschedules the items."""
    changes(store, ["buggy"], 1)

    def crash(_items: Sequence[OutboxItem]) -> None:
        raise KeyError("oops")

    drain(relay(store, InMemorySink("buggy", crash)))
    assert counts(store) == {("buggy", "pending"): 1}


def test_concurrent_relays_claim_disjoint_items(pg_url: str, clock: FakeClock) -> None:
    """Two relays on PostgreSQL never lease the same item (FOR UPDATE SKIP LOCKED)."""
    store = make_container(pg_url, clock)
    try:
        changes(store, ["s"], 6)
        later = clock.now() + timedelta(seconds=60)
        with store.uows(write=True) as first:
            mine = first.outbox.claim("s", clock.now(), later, 3)
            with store.uows(write=True) as second:
                theirs = second.outbox.claim("s", clock.now(), later, 10)
                second.commit()
            first.commit()
        assert len(mine) == 3
        assert len(theirs) == 3
        assert {i.id for i in mine}.isdisjoint({i.id for i in theirs})
    finally:
        store.dispose()


def test_backoff_has_full_jitter_under_a_cap() -> None:
    """Delays are uniform in [0, min(cap, base * 2^(n-1))]."""
    import random

    rng = random.Random(7)
    samples = [backoff_seconds(4, base=1, cap=300, rng=rng) for _ in range(500)]
    assert 0 <= min(samples) < 1
    assert 7 < max(samples) <= 8
    assert max(backoff_seconds(30, base=1, cap=300, rng=rng) for _ in range(100)) <= 300


def test_file_sink_appends_ndjson(store: Container, tmp_path: Path) -> None:
    """The file sink appends one JSON object per change, with the ledger entry id."""
    ids = changes(store, ["file"], 3)
    path = tmp_path / "out" / "usage.ndjson"
    drain(relay(store, FileSink(path)))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == ids
    assert [line["uses_after"] for line in lines] == [1, 2, 3]
    assert lines[0]["kind"] == "increment"
    assert lines[0]["delta"] == 1


def test_unwritable_file_is_a_transient_error(store: Container, tmp_path: Path) -> None:
    """A file that cannot be written keeps the items pending."""
    changes(store, ["file"], 1)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    drain(relay(store, FileSink(blocker / "usage.ndjson")))
    assert counts(store) == {("file", OutboxStatus.PENDING.value): 1}


def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_line(
    store: Container, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills in the middle of a batch's lines: the part written is truncated away and
    the items stay pending; once space returns, the retry appends whole lines after the ones
    already there, each change once."""
    path = tmp_path / "usage.ndjson"
    first = changes(store, ["file"], 1)
    drain(relay(store, FileSink(path)))
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    more = changes(store, ["file"], 2)
    monkeypatch.setattr(os, "write", half_then_full)
    drain(relay(store, FileSink(path)))
    assert counts(store)[("file", OutboxStatus.PENDING.value)] == 2
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == first
    monkeypatch.undo()
    clock.advance(hours=1)  # past the retry's back-off
    drain(relay(store, FileSink(path)))
    written = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert written[:1] == first
    assert sorted(written[1:]) == sorted(more)  # the batch's own order is the relay's


def test_dead_letters_are_listed_and_retried_with_their_ids(store: Container) -> None:
    """Dead letters show the platform's error; a retry sends them again with the same ids."""
    from bridge.service.common import PageRequest
    from bridge.service.relay import dead_letters, retry_dead_letters

    ids = changes(store, ["p", "q"], 2)
    rejecting = True

    def reject(_items: Sequence[OutboxItem]) -> None:
        if rejecting:
            raise PermanentDeliveryError("422 no such subscription")

    p, q = InMemorySink("p", reject), InMemorySink("q", reject)
    drain(relay(store, p, q))
    letters = dead_letters(store.uows, "p", PageRequest(1, 10))
    assert [d.item.entry.id for d in letters] == ids
    assert letters[0].error is not None
    assert "422 no such subscription" in letters[0].error
    rejecting = False
    assert retry_dead_letters(store.uows, store.clock, "p", [letters[0].item.id]) == 1
    drain(relay(store, p, q))
    assert list(p.received) == ids[:1]
    assert retry_dead_letters(store.uows, store.clock, None, None) == 3  # p's other, q's two
    drain(relay(store, p, q))
    assert list(p.received) == ids
    assert list(q.received) == ids
    assert counts(store) == {("p", "delivered"): 2, ("q", "delivered"): 2}


def test_resets_and_zero_changes_are_not_forwarded(store: Container) -> None:
    """Only increments and decrements reach the sinks; resets and +0 stay in the ledger."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    lic = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id))
    usage = UsageService(store.usage_uows, store.clock, ["s"])
    forwarded = [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 3)).entry_id,
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.DECREMENT, 1)).entry_id,
    ]
    usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 0))
    usage.apply(ADMIN, UsageChange(lic.id, UsageKind.RESET))
    sink = InMemorySink("s")
    drain(relay(store, sink))
    assert list(sink.received) == forwarded
    assert [i.entry.delta for i in sink.received.values()] == [3, -1]
    with store.uows() as uow:
        assert uow.ledger.history(lic.id, offset=0, limit=10)[1] == 4


def test_per_item_failures_leave_the_rest_delivered(store: Container, clock: FakeClock) -> None:
    """A sink that rejects one item for good and defers another: the rest of the batch is
    delivered, the rejected one is dead, the deferred one is retried alone."""
    from bridge.domain.delivery import ItemFailure

    ids = changes(store, ["s"], 3)
    deferring = True

    def partial(items: Sequence[OutboxItem]) -> list[ItemFailure]:
        failures = []
        for item in items:
            if item.entry.id == ids[1]:
                failures.append(ItemFailure(item.id, PermanentDeliveryError("bad event")))
            elif item.entry.id == ids[2] and deferring:
                failures.append(ItemFailure(item.id, TransientDeliveryError("mapping missing")))
        return failures

    sink = InMemorySink("s", partial)
    r = relay(store, sink)
    drain(r)
    assert list(sink.received) == [ids[0]]
    assert counts(store) == {("s", "delivered"): 1, ("s", "dead"): 1, ("s", "pending"): 1}
    deferring = False
    clock.advance(seconds=10)
    drain(r)
    assert list(sink.received) == [ids[0], ids[2]]


def test_items_carry_the_license_facts_mappings_need(store: Container) -> None:
    """Each claimed item names its license's key, policy and metadata."""
    changes(store, ["s"], 1)
    sink = InMemorySink("s")
    drain(relay(store, sink))
    (item,) = sink.received.values()
    assert item.license is not None
    assert item.license.id == item.entry.license_id
    assert item.license.key
    assert item.license.metadata == {}


def test_a_claimed_item_is_its_ledger_entry_as_stored(store: Container, clock: FakeClock) -> None:
    """A claim reads back each ledger entry field for field (kind, signed delta, UTC time with
    microseconds), its attempt number and its license's metadata; the item of a deleted
    license keeps its entry and has no license facts."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    meta = {"metadata": {"lago_subscription_id": "sub-1", "seats": 3}}
    kept = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id, **meta))
    gone = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id))
    usage = UsageService(store.usage_uows, store.clock, ["s"])
    clock.advance(microseconds=123_457)
    usage.apply(ADMIN, UsageChange(kept.id, UsageKind.INCREMENT, 5))
    usage.apply(ADMIN, UsageChange(kept.id, UsageKind.DECREMENT, 2))
    usage.apply(ADMIN, UsageChange(gone.id, UsageKind.INCREMENT, 1))
    licenses.delete_license(store.uows, store.clock, ADMIN, gone.id)
    with store.uows() as uow:
        stored = uow.ledger.history(kept.id, offset=0, limit=10)[0][::-1]
        stored += uow.ledger.history(gone.id, offset=0, limit=10)[0]
    with store.uows(write=True) as uow:
        claimed = uow.outbox.claim("s", clock.now(), clock.now() + timedelta(seconds=60), 10)
        uow.commit()
    assert [i.entry for i in claimed] == stored
    assert [i.entry.seq for i in claimed] == [e.seq for e in stored]
    assert [i.entry.delta for i in claimed] == [5, -2, 1]
    assert claimed[0].entry.occurred_at == clock.now()
    assert claimed[0].entry.occurred_at.utcoffset() == timedelta(0)
    assert [i.attempts for i in claimed] == [1, 1, 1]
    assert claimed[0].license is not None
    assert claimed[0].license.metadata == meta["metadata"]
    assert (claimed[0].license.key, claimed[0].license.policy_id) == (kept.key, policy.id)
    assert claimed[2].license is None


def test_a_claim_carries_the_license_as_it_is_now(store: Container, clock: FakeClock) -> None:
    """The claims' license facts are cached by their stored values: after the license's key and
    metadata change, the next claim carries the new ones, never the facts of an earlier
    claim."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    meta = {"metadata": {"lago_subscription_id": "sub-1"}}
    lic = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id, **meta))
    usage = UsageService(store.usage_uows, store.clock, ["s"])

    def claim() -> list[OutboxItem]:
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1))
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1))
        with store.uows(write=True) as uow:
            items = uow.outbox.claim("s", clock.now(), clock.now() + timedelta(hours=1), 10)
            uow.commit()
        return items

    first = claim()
    assert first[0].license is not None
    assert first[0].license.metadata == {"lago_subscription_id": "sub-1"}
    patch = LicensePatch(key="new-key", metadata={"lago_subscription_id": "sub-2"})
    licenses.update_license(store.uows, store.clock, ADMIN, lic.id, patch)
    second = claim()
    assert [i.license.metadata if i.license else None for i in second] == [
        {"lago_subscription_id": "sub-2"}
    ] * 2
    assert {i.license.key if i.license else None for i in second} == {"new-key"}


def test_circuit_breaker_pauses_a_failing_sink(store: Container, clock: FakeClock) -> None:
    """After N failed batches a sink is not asked again until its cool-down ends; the other
    sink keeps flowing; one good batch closes the circuit."""
    changes(store, ["down", "up"], 6)
    calls = {"n": 0}
    healthy = False

    def fail(_items: Sequence[OutboxItem]) -> None:
        calls["n"] += 1
        if not healthy:
            raise TransientDeliveryError("503")

    down, up = InMemorySink("down", fail), InMemorySink("up")
    r = relay(store, down, up, breaker_failures=2, breaker_cooldown_s=60, retry_cap_s=0.001)
    for _ in range(5):
        clock.advance(seconds=1)  # every item is due again
        r.run_once()
    assert calls["n"] == 2, "asked again while the circuit was open"
    assert len(up.received) == 6
    healthy = True
    clock.advance(seconds=61)
    drain(r)
    assert len(down.received) == 6


def test_status_counts_items_waiting_for_a_mapping(store: Container) -> None:
    """Items a sink cannot map yet stay pending and are counted as mapping_missing."""
    from bridge.domain.delivery import ItemFailure, mapping_missing

    changes(store, ["lago"], 2)

    def unmapped(items: Sequence[OutboxItem]) -> list[ItemFailure]:
        return [ItemFailure(i.id, mapping_missing("no lago_subscription_id")) for i in items]

    drain(relay(store, InMemorySink("lago", unmapped)))
    (row,) = outbox_status(store.uows)
    assert (row.status, row.count, row.mapping_missing) == (OutboxStatus.PENDING, 2, 2)


def test_items_waiting_for_a_mapping_do_not_open_the_circuit(
    store: Container, clock: FakeClock
) -> None:
    """Batches that only wait for mappings are no platform failure: the sink stays asked."""
    from bridge.domain.delivery import ItemFailure, mapping_missing

    changes(store, ["lago"], 2)
    calls = 0

    def unmapped(items: Sequence[OutboxItem]) -> list[ItemFailure]:
        nonlocal calls
        calls += 1
        return [ItemFailure(i.id, mapping_missing("no lago_subscription_id")) for i in items]

    r = relay(store, InMemorySink("lago", unmapped), breaker_failures=2, retry_cap_s=0.001)
    for _ in range(4):
        clock.advance(seconds=1)  # every item is due again
        r.run_once()
    assert calls == 4
