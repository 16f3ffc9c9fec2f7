"""Group commit on SQLite: one transaction per batch, and still an exact answer for everyone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.errors import UsesLimitExceeded
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.group_commit import GroupCommit
from bridge.service.usage import UsageChange, UsageOutcome, UsageService
from bridge.store.uow import SqlUnitOfWork

ADMIN = Principal(Role.ADMIN, "test")
DEADLINE_S = 10.0


class GatedUnitsOfWork:
    """The real unit-of-work factory, counting write transactions; the first one waits on a gate
    so that other callers queue behind it."""

    def __init__(self, container: Container) -> None:
        self._inner = container.uows
        self.gate = threading.Event()
        self.writes = 0

    def __call__(self, *, write: bool = False) -> SqlUnitOfWork:
        if write:
            self.writes += 1
            if self.writes == 1:
                assert self.gate.wait(DEADLINE_S)
        return self._inner(write=write)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def setup_license(container: Container, max_uses: int) -> str:
    product = products.create_product(container.uows, container.clock, ADMIN, {"name": "p"})
    policy = policies.create_policy(
        container.uows, container.clock, ADMIN, product.id, {"name": "p", "max_uses": max_uses}
    )
    return licenses.create_license(container.uows, container.clock, ADMIN, policy.id, {}).id


def run_queued(
    container: Container, changes: list[UsageChange]
) -> tuple[GatedUnitsOfWork, list[Any]]:
    """Apply the first change, hold its transaction until the others have queued, release."""
    uows = GatedUnitsOfWork(container)
    group = GroupCommit(uows, UsageService(uows, container.clock, ("sink",)))
    results: list[Any] = [None] * len(changes)

    def run(index: int) -> None:
        try:
            results[index] = group.apply(ADMIN, changes[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    wait_for(lambda: uows.writes == 1)  # the leader is inside its transaction
    for index in range(1, len(changes)):
        threads.append(threading.Thread(target=run, args=(index,)))
        threads[-1].start()
    wait_for(lambda: len(group._queue) == len(changes) - 1)  # white box: all queued
    uows.gate.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    return uows, results


def test_queued_changes_share_one_transaction_with_exact_answers(container: Container) -> None:
    """Five changes queued behind a leader commit together; each gets its own answer, the
    rejected ones leave no trace."""
    license_id = setup_license(container, max_uses=3)
    changes = [UsageChange(license_id, UsageKind.INCREMENT, 1) for _ in range(6)]
    uows, results = run_queued(container, changes)

    assert uows.writes == 2  # the leader's own transaction, then one for the five queued
    accepted = [r for r in results if isinstance(r, UsageOutcome)]
    rejected = [r for r in results if isinstance(r, UsesLimitExceeded)]
    assert (len(accepted), len(rejected)) == (3, 3)
    assert sorted(r.license.uses for r in accepted) == [1, 2, 3]
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        assert license.uses == 3
        entries, total = uow.ledger.history(license_id, offset=0, limit=10)
        assert total == 3
        assert {e.id for e in entries} == {r.entry_id for r in accepted}
        assert uow.outbox.pending_count() == 3


def test_same_key_twice_in_one_batch_applies_once(container: Container) -> None:
    """Two queued changes with one Idempotency-Key: the second replays the first's answer."""
    license_id = setup_license(container, max_uses=10)
    keyed = UsageChange(license_id, UsageKind.INCREMENT, 2, idempotency_key="same")
    changes = [UsageChange(license_id, UsageKind.INCREMENT, 1), keyed, keyed]
    _, results = run_queued(container, changes)

    first, second = results[1], results[2]
    assert isinstance(first, UsageOutcome)
    assert isinstance(second, UsageOutcome)
    assert first.entry_id == second.entry_id
    assert {first.replayed, second.replayed} == {False, True}
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        assert license.uses == 3


def test_a_failed_commit_fails_every_change_of_the_batch(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the batch cannot commit, no caller is told its change was accepted."""
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
    _, results = run_queued(container, changes)

    assert isinstance(results[0], UsageOutcome)
    assert all(isinstance(r, OSError) for r in results[1:])
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        assert license.uses == 1
        assert uow.ledger.history(license_id, offset=0, limit=10)[1] == 1
