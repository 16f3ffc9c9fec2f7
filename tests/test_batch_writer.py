"""The SQLite writer thread: queued changes share one transaction, every answer stays exact."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.errors import UsesLimitExceeded
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service import usage as usage_module
from bridge.service.batch_writer import BatchWriter
from bridge.service.usage import UsageChange, UsageOutcome, UsageService
from bridge.store.uow import SqlUnitOfWork
from bridge.testing import FakeClock
from tests.conftest import make_container
from tests.waiting import wait_for

ADMIN = Principal(Role.ADMIN, "test")
DEADLINE_S = 10.0


@pytest.fixture
def container(db_url: str, clock: FakeClock) -> Iterator[Container]:
    """The writer on both databases: group commit runs on SQLite and PostgreSQL alike."""
    c = make_container(db_url, clock)
    yield c
    c.dispose()


class GatedUnitsOfWork:
    """The real usage unit-of-work factory, counting transactions; the first one waits on a
    gate so that the changes submitted meanwhile queue behind it."""

    def __init__(self, container: Container) -> None:
        self._inner = container.usage_uows
        self.gate = threading.Event()
        self.opened = 0

    def __call__(self) -> SqlUnitOfWork:
        self.opened += 1
        if self.opened == 1:
            assert self.gate.wait(DEADLINE_S)
        return self._inner()


def setup_license(container: Container, max_uses: int | None) -> str:
    product = products.create_product(container.uows, container.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(
        container.uows, container.clock, ADMIN, NewPolicy(product.id, name="p", max_uses=max_uses)
    )
    return licenses.create_license(container.uows, container.clock, ADMIN, NewLicense(policy.id)).id


def run_queued(
    container: Container, changes: list[UsageChange]
) -> tuple[GatedUnitsOfWork, list[Future[UsageOutcome]]]:
    """Submit the first change, hold its transaction while the others queue, then release."""
    uows = GatedUnitsOfWork(container)
    writer = BatchWriter(uows, UsageService(uows, container.clock, ("sink",)))
    futures = [writer.submit(ADMIN, changes[0])]
    wait_for(lambda: uows.opened == 1, every_s=0.001)  # the writer is inside the first transaction
    futures += [writer.submit(ADMIN, change) for change in changes[1:]]
    uows.gate.set()
    writer.close()
    return uows, futures


def outcome(future: Future[UsageOutcome]) -> UsageOutcome | BaseException:
    error = future.exception(timeout=DEADLINE_S)
    return error if error is not None else future.result()


def assert_stored(container: Container, license_id: str, uses: int, deltas: list[int]) -> None:
    """The license counts ``uses``; its ledger holds one entry per delta, each with one
    pending outbox row (the one sink)."""
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        assert license.uses == uses
        entries, total = uow.ledger.history(license_id, offset=0, limit=50)
        assert total == len(deltas)
        assert sorted(e.delta for e in entries) == sorted(deltas)
        assert uow.outbox.pending_count() == len(deltas)


def test_queued_changes_share_one_transaction_with_exact_answers(container: Container) -> None:
    """Five changes queued behind the writer commit together; each gets its own answer and the
    rejected ones leave no trace."""
    license_id = setup_license(container, max_uses=3)
    changes = [UsageChange(license_id, UsageKind.INCREMENT, 1) for _ in range(6)]
    uows, futures = run_queued(container, changes)

    assert uows.opened == 2  # the first change alone, then one transaction for the five queued
    results = [outcome(f) for f in futures]
    accepted = [r for r in results if isinstance(r, UsageOutcome)]
    assert [r.license.uses for r in accepted] == [1, 2, 3]  # in arrival order
    assert all(isinstance(r, UsesLimitExceeded) for r in results[3:])
    assert_stored(container, license_id, 3, [1, 1, 1])
    with container.uows() as uow:
        entries, _total = uow.ledger.history(license_id, offset=0, limit=10)
        assert {e.id for e in entries} == {r.entry_id for r in accepted}


def test_a_change_failing_after_its_writes_is_undone_alone(container: Container) -> None:
    """Changes written one after the other in one transaction, the middle one failing after its
    counter, ledger and outbox writes (its answer cannot be built): its savepoint undoes exactly
    its writes; the changes before and after it commit (on PostgreSQL the savepoints nest)."""
    license_id = setup_license(container, max_uses=None)
    uows = GatedUnitsOfWork(container)
    writer = BatchWriter(uows, UsageService(uows, container.clock, ("sink",)))

    def broken(_outcome: UsageOutcome) -> None:
        raise RuntimeError("the answer cannot be rendered")

    first = writer.submit(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
    wait_for(lambda: uows.opened == 1, every_s=0.001)
    queued = [
        writer.submit(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 2)),
        writer.submit(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 4), broken),
        writer.submit(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 8)),
        writer.submit(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 16), broken),
    ]
    uows.gate.set()
    writer.close()

    results = [outcome(f) for f in [first, *queued]]
    assert uows.opened == 2  # the four queued changes shared one transaction
    assert [r.license.uses for r in results if isinstance(r, UsageOutcome)] == [1, 3, 11]
    assert [type(r) for r in results[2::2]] == [RuntimeError, RuntimeError]
    assert_stored(container, license_id, 11, [1, 2, 8])


def test_a_write_failing_in_the_store_is_the_failing_changes_own(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger and outbox rows of a change travel together (pipelined on PostgreSQL), so the
    store reports their errors late: still inside that change's savepoint. A change whose ledger
    entry collides with another's id fails alone and runs again alone; its neighbours in the
    batch keep exact answers and the counter counts each change once."""
    ids = iter(["a" * 32, "b" * 32, "a" * 32, "c" * 32, "d" * 32])
    fake_uuid = SimpleNamespace(uuid4=lambda: uuid.UUID(next(ids)))
    monkeypatch.setattr(usage_module, "uuid", fake_uuid)
    license_id = setup_license(container, max_uses=None)
    changes = [UsageChange(license_id, UsageKind.INCREMENT, n) for n in (1, 2, 4, 8)]
    uows, futures = run_queued(container, changes)

    results = [outcome(f) for f in futures]
    assert all(isinstance(r, UsageOutcome) for r in results), results
    done = [r for r in results if isinstance(r, UsageOutcome)]
    # The third collided in the batch (with the first's id): the batch committed the second and
    # the fourth, then the third ran alone with a fresh id.
    assert [r.license.uses for r in done] == [1, 3, 15, 11]
    assert [r.entry_id[0] for r in done] == ["a", "b", "d", "c"]
    assert uows.opened == 3
    assert_stored(container, license_id, 15, [1, 2, 4, 8])


def test_same_key_twice_in_one_batch_applies_once(container: Container) -> None:
    """Two queued changes with one Idempotency-Key: the second replays the first's answer."""
    license_id = setup_license(container, max_uses=10)
    keyed = UsageChange(license_id, UsageKind.INCREMENT, 2, idempotency_key="same")
    _, futures = run_queued(
        container, [UsageChange(license_id, UsageKind.INCREMENT, 1), keyed, keyed]
    )

    first, second = futures[1].result(DEADLINE_S), futures[2].result(DEADLINE_S)
    assert first.entry_id == second.entry_id
    assert (first.replayed, second.replayed) == (False, True)
    assert second.license.uses == 3


def test_a_failed_commit_fails_every_change_of_the_batch(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a batch cannot commit, no caller is told its change was accepted."""
    license_id = setup_license(container, max_uses=10)
    original = SqlUnitOfWork.commit
    calls = {"n": 0}

    def failing_commit(self: SqlUnitOfWork) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the batch of queued changes
            raise OSError("disk full")
        original(self)

    monkeypatch.setattr(SqlUnitOfWork, "commit", failing_commit)
    changes = [UsageChange(license_id, UsageKind.INCREMENT, 1) for _ in range(4)]
    _, futures = run_queued(container, changes)

    assert isinstance(outcome(futures[0]), UsageOutcome)
    assert all(isinstance(outcome(f), OSError) for f in futures[1:])
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        assert license.uses == 1
        assert uow.ledger.history(license_id, offset=0, limit=10)[1] == 1


def test_close_finishes_queued_changes(container: Container) -> None:
    """Stopping the writer applies everything already submitted."""
    license_id = setup_license(container, max_uses=100)
    writer = BatchWriter(container.usage_uows, container.usage())
    change = UsageChange(license_id, UsageKind.INCREMENT, 1)
    futures = [writer.submit(ADMIN, change) for _ in range(20)]
    writer.close()
    assert sorted(f.result(0).license.uses for f in futures) == list(range(1, 21))


def test_waiters_on_an_event_loop_get_exact_answers(container: Container) -> None:
    """``submit_async``: changes awaited on one loop are answered (in one wake-up per batch),
    each with its own outcome or error."""
    import asyncio

    license_id = setup_license(container, max_uses=3)
    uows = GatedUnitsOfWork(container)
    uows.gate.set()
    writer = BatchWriter(uows, UsageService(uows, container.clock, ("sink",)))

    async def main() -> list[UsageOutcome | BaseException]:
        waiters = [
            writer.submit_async(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
            for _ in range(5)
        ]
        return await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), DEADLINE_S)

    try:
        results = asyncio.run(main())
    finally:
        writer.close()
    accepted = [r for r in results if isinstance(r, UsageOutcome)]
    assert sorted(r.license.uses for r in accepted) == [1, 2, 3]
    assert sum(isinstance(r, UsesLimitExceeded) for r in results) == 2
