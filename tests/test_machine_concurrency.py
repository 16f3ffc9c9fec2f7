"""Concurrent activations at a license's limit, on a real SQLite file and on PostgreSQL.

Writers start together at a barrier and never sleep to synchronize; or, as the API submits
them, the activations share one ``BatchWriter`` batch (one transaction, a savepoint each). Each
activation would fit alone but not together with the others: exactly the allowed number may
succeed, every other one fails with Keygen's own error, and the ledger holds one entry per
activation that succeeded.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewMachine, NewPolicy, NewProduct
from bridge.domain.errors import FingerprintTaken, MachineCoreLimitExceeded, MachineLimitExceeded
from bridge.domain.model import Machine
from bridge.domain.ports import WriterUnitOfWork
from bridge.service.batch_writer import BatchWriter
from bridge.service.licenses import create_license
from bridge.service.policies import create_policy
from bridge.service.products import create_product
from bridge.settings import load_settings
from bridge.testing import FakeClock
from tests.threads import run_in_threads

ADMIN = Principal(Role.ADMIN, "admin")
WRITERS = 8
DEADLINE_S = 60.0


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Container]:
    container = build(load_settings(database_url=db_url), clock=clock)
    container.migrate()
    yield container
    container.dispose()


def license_with(store: Container, **limits: object) -> str:
    uows, clock = store.uows, store.clock
    product = create_product(uows, clock, ADMIN, NewProduct(name="App"))
    attrs = {"name": "Floating", "floating": True, **limits}
    policy = create_policy(uows, clock, ADMIN, NewPolicy(product.id, **attrs))
    return create_license(uows, clock, ADMIN, NewLicense(policy.id)).id


def race(
    store: Container, make: Callable[[int], NewMachine]
) -> tuple[list[Machine], Counter[type]]:
    """Run ``WRITERS`` activations at once; the machines made and the errors' types."""
    service = store.machines()
    barrier = threading.Barrier(WRITERS, timeout=DEADLINE_S)
    made: list[Machine] = []
    errors: Counter[type] = Counter()
    lock = threading.Lock()

    def writer(i: int) -> None:
        request = make(i)
        barrier.wait()
        try:
            machine = service.activate(ADMIN, request)
        except Exception as exc:
            with lock:
                errors[type(exc)] += 1
        else:
            with lock:
                made.append(machine)

    run_in_threads(WRITERS, writer, DEADLINE_S)
    return made, errors


class GatedUnitsOfWork:
    """The writer's units of work, counted; the first waits on a gate, so that the activations
    submitted meanwhile queue behind it and share the next batch."""

    def __init__(self, store: Container) -> None:
        self._inner = store.writer_uows
        self.gate = threading.Event()
        self.opened = 0

    def __call__(self) -> WriterUnitOfWork:
        self.opened += 1
        if self.opened == 1:
            assert self.gate.wait(DEADLINE_S)
        return self._inner()


def race_in_one_batch(
    store: Container, make: Callable[[int], NewMachine]
) -> tuple[list[Machine], Counter[type]]:
    """``WRITERS`` activations in one batch of the writer; the machines made and the errors'
    types."""
    uows = GatedUnitsOfWork(store)
    service = store.machines()
    writer = BatchWriter(uows, store.usage(), machines=service)
    holder = license_with(store)

    async def submit() -> list[Machine | BaseException]:
        first = writer.activate_async(ADMIN, NewMachine(holder, fingerprint="holder"))
        while uows.opened == 0:  # the writer is inside the first transaction
            await asyncio.sleep(0.001)
        rest = [writer.activate_async(ADMIN, make(i)) for i in range(WRITERS)]
        uows.gate.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))[1:]

    try:
        outcomes = asyncio.run(asyncio.wait_for(submit(), DEADLINE_S))
    finally:
        writer.close()
    assert uows.opened == 2, "the activations did not share one batch"
    made = [o for o in outcomes if isinstance(o, Machine)]
    return made, Counter(type(o) for o in outcomes if not isinstance(o, Machine))


RACES = pytest.mark.parametrize("racer", [race, race_in_one_batch], ids=["threads", "batch"])
Racer = Callable[[Container, Callable[[int], NewMachine]], tuple[list[Machine], Counter[type]]]


def core_total_and_entries(store: Container, license_id: str) -> tuple[int, int, int]:
    with store.uows() as uow:
        tally = uow.machines.tally(license_id)
        _, entries = uow.ledger.history(license_id, offset=0, limit=100)
    return tally.machines, tally.cores, entries


@RACES
def test_core_limit_holds_under_concurrent_activations(store: Container, racer: Racer) -> None:
    """maxCores 8 and eight activations of 5 cores at once: exactly one succeeds."""
    lic = license_with(store, max_cores=8)
    made, errors = racer(store, lambda i: NewMachine(lic, fingerprint=f"fp-{i}", cores=5))
    assert len(made) == 1
    assert errors == Counter({MachineCoreLimitExceeded: WRITERS - 1})
    assert core_total_and_entries(store, lic) == (1, 5, 1)


@RACES
def test_machine_limit_holds_under_concurrent_activations(store: Container, racer: Racer) -> None:
    """maxMachines 3 with one machine active: of eight concurrent activations, two succeed."""
    lic = license_with(store, max_machines=3)
    store.machines().activate(ADMIN, NewMachine(lic, fingerprint="first"))
    made, errors = racer(store, lambda i: NewMachine(lic, fingerprint=f"fp-{i}"))
    assert len(made) == 2
    assert errors == Counter({MachineLimitExceeded: WRITERS - 2})
    assert core_total_and_entries(store, lic)[0] == 3


@RACES
def test_one_fingerprint_activates_once(store: Container, racer: Racer) -> None:
    """Eight activations of one fingerprint at once: one machine, seven FINGERPRINT_TAKEN."""
    lic = license_with(store)
    made, errors = racer(store, lambda i: NewMachine(lic, fingerprint="same", cores=1))
    assert len(made) == 1
    assert errors == Counter({FingerprintTaken: WRITERS - 1})
    assert core_total_and_entries(store, lic) == (1, 1, 1)


def test_a_deactivation_racing_activations_frees_exactly_its_cores(store: Container) -> None:
    """While a 4-core machine is deactivated, eight 4-core activations race for maxCores 8
    (4 already used by another machine): the total never passes 8 and the ledger's last core
    total equals the machines' sum."""
    lic = license_with(store, max_cores=8)
    service = store.machines()
    service.activate(ADMIN, NewMachine(lic, fingerprint="keep", cores=4))
    leaving = service.activate(ADMIN, NewMachine(lic, fingerprint="leave", cores=4))
    done = threading.Event()

    def deactivate() -> None:
        service.deactivate(ADMIN, leaving.id)
        done.set()

    threading.Thread(target=deactivate, daemon=True).start()
    made, errors = race(store, lambda i: NewMachine(lic, fingerprint=f"fp-{i}", cores=4))
    assert done.wait(DEADLINE_S)
    assert len(made) <= 1
    assert set(errors) <= {MachineCoreLimitExceeded}
    _, cores, _ = core_total_and_entries(store, lic)
    assert cores == 4 + 4 * len(made) <= 8
    with store.uows() as uow:
        last = uow.ledger.history(lic, offset=0, limit=1)[0][0]
    assert last.uses_after == cores
