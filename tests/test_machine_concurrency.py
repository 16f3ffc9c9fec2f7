"""Concurrent activations at a license's limit, on a real SQLite file and on PostgreSQL.

Writers start together at a barrier and never sleep to synchronize. Each activation would fit
alone but not together with the others: exactly the allowed number may succeed, every other one
fails with Keygen's own error, and the ledger holds one entry per activation that succeeded.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewMachine, NewPolicy, NewProduct
from bridge.domain.errors import FingerprintTaken, MachineCoreLimitExceeded, MachineLimitExceeded
from bridge.domain.model import Machine
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


def core_total_and_entries(store: Container, license_id: str) -> tuple[int, int, int]:
    with store.uows() as uow:
        tally = uow.machines.tally(license_id)
        _, entries = uow.ledger.history(license_id, offset=0, limit=100)
    return tally.machines, tally.cores, entries


def test_core_limit_holds_under_concurrent_activations(store: Container) -> None:
    """maxCores 8 and eight activations of 5 cores at once: exactly one succeeds."""
    lic = license_with(store, max_cores=8)
    made, errors = race(store, lambda i: NewMachine(lic, fingerprint=f"fp-{i}", cores=5))
    assert len(made) == 1
    assert errors == Counter({MachineCoreLimitExceeded: WRITERS - 1})
    assert core_total_and_entries(store, lic) == (1, 5, 1)


def test_machine_limit_holds_under_concurrent_activations(store: Container) -> None:
    """maxMachines 3 with one machine active: of eight concurrent activations, two succeed."""
    lic = license_with(store, max_machines=3)
    store.machines().activate(ADMIN, NewMachine(lic, fingerprint="first"))
    made, errors = race(store, lambda i: NewMachine(lic, fingerprint=f"fp-{i}"))
    assert len(made) == 2
    assert errors == Counter({MachineLimitExceeded: WRITERS - 2})
    assert core_total_and_entries(store, lic)[0] == 3


def test_one_fingerprint_activates_once(store: Container) -> None:
    """Eight activations of one fingerprint at once: one machine, seven FINGERPRINT_TAKEN."""
    lic = license_with(store)
    made, errors = race(store, lambda i: NewMachine(lic, fingerprint="same", cores=1))
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
