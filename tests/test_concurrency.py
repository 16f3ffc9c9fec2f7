"""Concurrency: many writers on one license, on a real SQLite file and on PostgreSQL.

Every test starts its writers together (a barrier) and never sleeps to synchronize. What it
checks is the store's promise: the conditional UPDATE serializes the counter, every accepted
change has exactly one ledger row, the ledger is one unbroken chain whose deltas sum to the
counter, and contention surfaces only as Keygen's own errors (never a 409, 503 or a driver error).
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text

from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.errors import UsesInvalid, UsesLimitExceeded
from bridge.domain.model import UsageEntry, UsageKind
from bridge.service.licenses import create_license
from bridge.service.policies import create_policy
from bridge.service.products import create_product
from bridge.service.usage import UsageChange, UsageOutcome
from bridge.settings import load_settings
from bridge.testing import FakeClock
from tests.processes import warm_context
from tests.threads import run_in_threads

ADMIN = Principal(Role.ADMIN, "admin")
KEYGEN_ERRORS = (UsesLimitExceeded, UsesInvalid)
DEADLINE_S = 60.0  # generous: a hang fails the test instead of blocking the run


# Helpers ------------------------------------------------------------------------------------
@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Container]:
    """A migrated container on the parametrized database (SQLite file or PostgreSQL)."""
    container = build(load_settings(database_url=db_url), clock=clock)
    container.migrate()
    yield container
    container.dispose()


def metered_license(container: Container, max_uses: int | None, *, uses: int = 0) -> str:
    """A new license whose policy has ``max_uses``, already counting ``uses``."""
    uows, clock = container.uows, container.clock
    product = create_product(uows, clock, ADMIN, NewProduct(name="App"))
    policy = create_policy(
        uows, clock, ADMIN, NewPolicy(product.id, name="Metered", max_uses=max_uses)
    )
    license = create_license(uows, clock, ADMIN, NewLicense(policy.id))
    if uses:
        container.usage().apply(ADMIN, UsageChange(license.id, UsageKind.INCREMENT, uses))
    return license.id


@dataclass
class Results:
    """What the writers saw: accepted outcomes and raised exceptions, in no particular order."""

    accepted: list[UsageOutcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def error_types(self) -> Counter[type[BaseException]]:
        return Counter(type(e) for e in self.errors)

    def unexpected(self) -> list[BaseException]:
        return [e for e in self.errors if type(e) not in KEYGEN_ERRORS]


def run_threads(
    count: int, work: Callable[[int], list[UsageChange]], container: Container
) -> Results:
    """Apply ``work(i)`` in thread ``i``; all threads start together at a barrier."""
    usage = container.usage()
    barrier = threading.Barrier(count, timeout=DEADLINE_S)
    results = Results()
    lock = threading.Lock()

    def writer(index: int) -> None:
        changes = work(index)
        barrier.wait()
        for change in changes:
            try:
                outcome = usage.apply(ADMIN, change)
            except Exception as exc:
                with lock:
                    results.errors.append(exc)
            else:
                with lock:
                    results.accepted.append(outcome)

    run_in_threads(count, writer, DEADLINE_S)
    return results


@dataclass(frozen=True)
class LedgerState:
    uses: int
    entries: list[UsageEntry]  # oldest first
    sql_rows: int
    sql_sum: int
    repo_total: int


def ledger_state(container: Container, license_id: str) -> LedgerState:
    """The counter and the ledger, read through the repositories and by plain SQL."""
    with container.uows() as uow:
        license = uow.licenses.get(license_id)
        assert license is not None
        entries, total = uow.ledger.history(license_id, offset=0, limit=100_000)
        repo_total = uow.ledger.total(license_id)
    assert len(entries) == total
    with container.engine.connect() as conn:
        rows, delta_sum = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(delta), 0) FROM usage_ledger WHERE license_id = :id"
            ),
            {"id": license_id},
        ).one()
    return LedgerState(
        uses=license.uses,
        entries=sorted(entries, key=lambda e: e.seq or 0),
        sql_rows=int(rows),
        sql_sum=int(delta_sum),
        repo_total=repo_total,
    )


def assert_serial_ledger(state: LedgerState, max_uses: int | None) -> None:
    """Counter == ledger sum, and the ledger is one unbroken chain within [0, max]."""
    assert state.sql_rows == len(state.entries)
    assert state.uses == state.sql_sum == state.repo_total
    previous = 0
    for entry in state.entries:
        assert entry.uses_before == previous, f"ledger chain broken at seq {entry.seq}"
        assert entry.uses_after == entry.uses_before + entry.delta
        assert entry.uses_after >= 0
        if max_uses is not None and entry.delta != 0:
            assert entry.uses_after <= max_uses
        previous = entry.uses_after
    assert previous == state.uses


def increments(license_id: str, count: int, amount: int = 1) -> list[UsageChange]:
    return [UsageChange(license_id, UsageKind.INCREMENT, amount) for _ in range(count)]


# Threads ------------------------------------------------------------------------------------
def test_threads_accept_exactly_max_uses(store: Container) -> None:
    """16 threads sending 160 increments to a license capped at 50 get exactly 50 accepted."""
    max_uses, threads, per_thread = 50, 16, 10
    license_id = metered_license(store, max_uses)

    results = run_threads(threads, lambda _: increments(license_id, per_thread), store)

    assert results.unexpected() == []
    assert len(results.accepted) == max_uses
    assert results.error_types() == Counter({UsesLimitExceeded: threads * per_thread - max_uses})
    # Each accepted increment saw its own count: 1..50, none twice.
    assert sorted(o.license.uses for o in results.accepted) == list(range(1, max_uses + 1))
    state = ledger_state(store, license_id)
    assert state.uses == max_uses
    assert state.sql_rows == max_uses
    assert {e.id for e in state.entries} == {o.entry_id for o in results.accepted}
    assert_serial_ledger(state, max_uses)


# Processes ----------------------------------------------------------------------------------
def _process_writer(tasks: Any, results: Any, barrier: Any) -> None:
    """A writer process: for each task, its own settings, engine and service.

    A task is ``(url, license_id, attempts)``; ``None`` ends the process. All writers of a round
    start their attempts together at ``barrier`` and report ``(pid, entry ids, error names)``.
    """
    while (task := tasks.get()) is not None:
        url, license_id, attempts = task
        accepted: list[str] = []
        errors: list[str] = []
        try:
            container = build(load_settings(database_url=url))
            try:
                usage = container.usage()
                barrier.wait(DEADLINE_S)
                for change in increments(license_id, attempts):
                    try:
                        accepted.append(usage.apply(ADMIN, change).entry_id)
                    except Exception as exc:
                        errors.append(type(exc).__name__)
            finally:
                container.dispose()
        except Exception as exc:  # setup or barrier failure: report it instead of hanging
            errors.append(f"writer failed: {type(exc).__name__}: {exc}")
        results.put((os.getpid(), accepted, errors))


class WriterProcesses:
    """Writer processes, started once per module: starting a process is the slow part."""

    def __init__(self, count: int) -> None:
        ctx = warm_context()
        self.count = count
        self.barrier = ctx.Barrier(count)
        self.results = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(count)]
        self.processes = [
            ctx.Process(target=_process_writer, args=(q, self.results, self.barrier), daemon=True)
            for q in self.tasks
        ]
        for process in self.processes:
            process.start()

    def run(
        self, url: str, license_id: str, attempts: int
    ) -> list[tuple[int, list[str], list[str]]]:
        """Every process makes ``attempts`` increments, all starting together."""
        self.barrier.reset()
        for q in self.tasks:
            q.put((url, license_id, attempts))
        deadline = time.monotonic() + DEADLINE_S
        reports = []
        for _ in range(self.count):
            try:
                reports.append(self.results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail("a writer process did not report before the deadline")
        return reports

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        deadline = time.monotonic() + DEADLINE_S
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for q in [*self.tasks, self.results]:
            q.close()
            q.join_thread()


@pytest.fixture(scope="module")
def writer_processes() -> Iterator[WriterProcesses]:
    pool = WriterProcesses(4)
    yield pool
    pool.close()


def test_processes_accept_exactly_max_uses(
    store: Container, db_url: str, writer_processes: WriterProcesses
) -> None:
    """4 OS processes sending 160 increments to a license at 5 of 60 get exactly 55 accepted."""
    max_uses, start, attempts = 60, 5, 40
    processes = writer_processes.count
    license_id = metered_license(store, max_uses, uses=start)

    reports = writer_processes.run(db_url, license_id, attempts)

    assert len({pid for pid, _, _ in reports}) == processes
    assert os.getpid() not in {pid for pid, _, _ in reports}
    accepted = [entry for _, entries, _ in reports for entry in entries]
    errors = Counter(name for _, _, names in reports for name in names)
    assert errors == Counter({"UsesLimitExceeded": processes * attempts - (max_uses - start)})
    assert len(accepted) == max_uses - start
    state = ledger_state(store, license_id)
    assert state.uses == max_uses
    assert state.sql_rows == max_uses - start + 1  # plus the setup increment
    assert set(accepted) == {e.id for e in state.entries[1:]}
    assert_serial_ledger(state, max_uses)


# Mixed increments, decrements and resets ----------------------------------------------------
def test_mixed_changes_stay_within_bounds(store: Container) -> None:
    """Concurrent increments, decrements and resets never leave [0, max]; counter == ledger."""
    max_uses, threads, per_thread, start = 10, 12, 25, 5
    license_id = metered_license(store, max_uses, uses=start)

    def work(index: int) -> list[UsageChange]:
        rng = random.Random(index)
        changes = []
        for _ in range(per_thread):
            roll = rng.random()
            if roll < 0.04:
                changes.append(UsageChange(license_id, UsageKind.RESET))
            else:
                kind = UsageKind.INCREMENT if roll < 0.52 else UsageKind.DECREMENT
                changes.append(UsageChange(license_id, kind, rng.randint(1, 3)))
        return changes

    results = run_threads(threads, work, store)

    assert results.unexpected() == []
    assert results.errors, "no change was rejected: the test did not reach the bounds"
    state = ledger_state(store, license_id)
    assert state.sql_rows == len(results.accepted) + 1  # plus the setup increment
    assert {o.entry_id for o in results.accepted} <= {e.id for e in state.entries}
    by_id = {e.id: e for e in state.entries}
    for outcome in results.accepted:
        assert outcome.license.uses == by_id[outcome.entry_id].uses_after
        assert 0 <= outcome.license.uses <= max_uses
    assert_serial_ledger(state, max_uses)


# Idempotency ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "max_uses", "start"),
    [
        pytest.param(UsageKind.INCREMENT, 1000, 0, id="increment-roomy"),
        pytest.param(UsageKind.INCREMENT, 1, 0, id="increment-last-unit"),
        pytest.param(UsageKind.DECREMENT, 1000, 1, id="decrement-last-unit"),
        pytest.param(UsageKind.RESET, 1000, 7, id="reset"),
    ],
)
def test_same_idempotency_key_applies_once(
    store: Container, kind: UsageKind, max_uses: int, start: int
) -> None:
    """16 concurrent requests with one Idempotency-Key: one ledger row, one entry id for all."""
    threads = 16
    license_id = metered_license(store, max_uses, uses=start)
    key = f"idem-{uuid.uuid4()}"
    change = UsageChange(license_id, kind, 1, idempotency_key=key)

    results = run_threads(threads, lambda _: [change], store)

    assert results.errors == []
    assert len(results.accepted) == threads
    assert len({o.entry_id for o in results.accepted}) == 1
    assert sum(not o.replayed for o in results.accepted) == 1
    expected = {UsageKind.INCREMENT: start + 1, UsageKind.DECREMENT: start - 1}.get(kind, 0)
    assert {o.license.uses for o in results.accepted} == {expected}
    state = ledger_state(store, license_id)
    keyed = [e for e in state.entries if e.idempotency_key == key]
    assert [e.id for e in keyed] == [results.accepted[0].entry_id]
    assert state.uses == expected
    assert state.sql_rows == (2 if start else 1)
    assert_serial_ledger(state, max_uses)


# Everything at once -------------------------------------------------------------------------
def test_contention_raises_only_keygen_errors(store: Container) -> None:
    """Mixed traffic on 3 tight licenses, with shared keys, raises only Keygen's 422 errors."""
    threads, per_thread = 16, 20
    licenses = [metered_license(store, max_uses, uses=2) for max_uses in (3, 5, 8)]
    maxima = dict(zip(licenses, (3, 5, 8), strict=True))
    shared = {lic: [f"shared-{lic}-{j}" for j in range(4)] for lic in licenses}

    def work(index: int) -> list[UsageChange]:
        rng = random.Random(1000 + index)
        changes = []
        for n in range(per_thread):
            lic = rng.choice(licenses)
            roll = rng.random()
            if roll < 0.25:  # the same request under a key other threads also send
                changes.append(
                    UsageChange(
                        lic, UsageKind.INCREMENT, 1, idempotency_key=rng.choice(shared[lic])
                    )
                )
            elif roll < 0.3:
                changes.append(UsageChange(lic, UsageKind.RESET, idempotency_key=f"r{index}-{n}"))
            else:
                kind = UsageKind.INCREMENT if roll < 0.65 else UsageKind.DECREMENT
                key = f"k{index}-{n}" if rng.random() < 0.5 else None
                changes.append(UsageChange(lic, kind, rng.randint(1, 2), idempotency_key=key))
        return changes

    results = run_threads(threads, work, store)

    assert results.unexpected() == []
    accepted_ids = {o.entry_id for o in results.accepted}
    total_rows = 0
    for lic in licenses:
        state = ledger_state(store, lic)
        assert_serial_ledger(state, maxima[lic])
        for key in shared[lic]:
            assert sum(e.idempotency_key == key for e in state.entries) <= 1
        total_rows += state.sql_rows - 1  # minus the setup increment
    # Every ledger row belongs to an answer, and no answer names a row that is not there.
    fresh = {o.entry_id for o in results.accepted if not o.replayed}
    assert total_rows == len(fresh)
    assert accepted_ids == fresh
