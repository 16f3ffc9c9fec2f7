"""Core totals on their way to the sinks: the mappings, and the relay into the fake platforms."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import MachinePatch, NewLicense, NewMachine, NewPolicy, NewProduct
from bridge.domain.delivery import LicenseFacts, OutboxItem
from bridge.domain.model import UsageEntry, UsageKind
from bridge.service import licenses, policies, products
from bridge.service.machines import MachineService
from bridge.service.relay import Relay
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from connectors.file.sink import record
from connectors.lago import LagoSink, LagoSinkSettings, MappingMissing, event
from connectors.lago import accepts as lago_accepts
from connectors.m3ter import M3terSink, M3terSinkSettings
from connectors.m3ter.mapping import accepts as m3ter_accepts
from connectors.m3ter.mapping import measurement
from tests.builders import outbox_item
from tests.conftest import make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.m3ter import FakeM3ter
from tests.test_m3ter import settings as m3ter_settings

ADMIN = Principal(Role.ADMIN, "test")
WHEN = datetime(2026, 1, 1, tzinfo=UTC)
META = {"lago_subscription_id": "sub_1", "m3ter_account_code": "acme"}


def facts(item: OutboxItem) -> tuple[UsageEntry, LicenseFacts | None]:
    """What a sink's ``accepts`` is asked about an item."""
    return item.entry, item.license


def core_item(kind: UsageKind = UsageKind.ACTIVATE, before: int = 2, after: int = 6) -> OutboxItem:
    return outbox_item(
        item_id=1,
        entry_id=str(uuid.UUID(int=1)),
        sink="sink",
        delta=after - before,
        occurred_at=WHEN,
        license_id="lic",
        policy="pol",
        metadata=META,
        kind=kind,
        before=before,
        machine_id="m-1",
    )


def lago_settings(**overrides: Any) -> LagoSinkSettings:
    values = {"enabled": True, "api_key": SecretStr("k"), "default_metric_code": "api_calls"}
    return LagoSinkSettings(**{**values, **overrides})


# Mappings -------------------------------------------------------------------------------------
def test_lago_event_carries_the_core_total() -> None:
    """A machine entry is an event of the cores metric whose property is the new total."""
    config = lago_settings(cores_metric_codes={"pol": "cpu_cores"})
    assert event(core_item(UsageKind.DEACTIVATE, before=6, after=2), config) == {
        "transaction_id": str(uuid.UUID(int=1)),
        "external_subscription_id": "sub_1",
        "code": "cpu_cores",
        "timestamp": "1767225600.000",
        "properties": {"cores": 2},
    }
    assert lago_accepts(*facts(core_item(UsageKind.DEACTIVATE)), config)


def test_lago_skips_core_totals_without_a_cores_metric() -> None:
    """No cores metric for the policy: machine entries are skipped, usage still goes."""
    config = lago_settings(forward_decrements=False)
    assert not lago_accepts(*facts(core_item()), config)
    with pytest.raises(MappingMissing):
        event(core_item(), config)
    assert lago_accepts(*facts(core_item()), lago_settings(default_cores_metric_code="cores"))
    other_policy = lago_settings(default_cores_metric_code="cores", policies=["other"])
    assert not lago_accepts(*facts(core_item()), other_policy)


def test_m3ter_measurement_carries_the_core_total() -> None:
    """A machine entry is a measurement of the cores meter with the new total; a deactivation
    is sent even when decrements are not."""
    config = m3ter_settings(default_cores_meter_code="cores_gauge", forward_decrements=False)
    item = core_item(UsageKind.DEACTIVATE, before=6, after=2)
    assert m3ter_accepts(*facts(item), config)
    found = measurement(item, config)
    assert (found["meter"], found["measure"], found["account"]) == (
        "cores_gauge",
        {"cores": 2},
        "acme",
    )
    assert not m3ter_accepts(*facts(item), m3ter_settings())


def test_file_record_names_core_totals() -> None:
    """The file sink writes a machine entry's core totals and machine id."""
    line = record(core_item(UsageKind.CORES, before=2, after=6))
    assert (line["kind"], line["cores_before"], line["cores_after"]) == ("cores", 2, 6)
    assert line["machine_id"] == "m-1"
    assert "uses_after" not in line


# Through the relay ---------------------------------------------------------------------------
@pytest.fixture
def store(sqlite_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(sqlite_url, clock)
    yield container
    container.dispose()


def machine_story(store: Container, sinks: list[str]) -> tuple[str, list[str]]:
    """Activate 4 and 2 cores, raise the first to 8, deactivate it, one usage increment and a
    0-core activation between; the policy id and the forwarded entry ids."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    attrs = {"name": "p", "floating": True}
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, **attrs))
    lic = licenses.create_license(
        store.uows, store.clock, ADMIN, NewLicense(policy.id, metadata=META)
    )
    machines = MachineService(store.uows, store.clock, sinks)
    first = machines.activate(ADMIN, NewMachine(lic.id, fingerprint="a", cores=4))
    machines.activate(ADMIN, NewMachine(lic.id, fingerprint="b", cores=2))
    machines.activate(ADMIN, NewMachine(lic.id, fingerprint="no-cores"))  # total unchanged
    UsageService(store.usage_uows, store.clock, sinks).apply(
        ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 3)
    )
    machines.update(ADMIN, first.id, MachinePatch(cores=8))
    machines.deactivate(ADMIN, first.id)
    with store.uows() as uow:
        entries, _ = uow.ledger.history(lic.id, offset=0, limit=100)
    return policy.id, [e.id for e in reversed(entries) if e.delta != 0]


def expected(cores: str, field: str, usage: str, units: str) -> list[tuple[str, dict[str, int]]]:
    """What ``machine_story`` forwards: the core total after each change (peak 10, latest 2)
    and the usage delta, in ledger order."""
    totals = [(cores, {field: n}) for n in (4, 6, 10, 2)]
    return [*totals[:2], (usage, {units: 3}), *totals[2:]]


def drain(relay: Relay) -> None:
    while any(r.handled for r in relay.run_once().values()):
        pass


def test_core_totals_reach_lago(store: Container) -> None:
    """Lago receives the core total after each machine change on the cores metric (peak 10,
    latest 2) beside the usage delta on the usage metric, each once."""
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    lago = FakeLago("k")
    policy, ids = machine_story(store, ["lago"])
    config = lago_settings(cores_metric_codes={policy: "cpu_cores"})
    drain(Relay(store.uows, [LagoSink(config, client=lago.client())], store.clock))
    assert lago.violations == []
    assert lago.ingested == ids
    sent = [(e["code"], e["properties"]) for batch in lago.batches for e in batch]
    assert sent == expected("cpu_cores", "cores", "api_calls", "units")


def test_core_totals_reach_m3ter(store: Container, clock: FakeClock) -> None:
    """m3ter receives one measurement per machine change on the cores meter, keyed by uid."""
    fake = FakeM3ter(clock)
    policy, ids = machine_story(store, ["m3ter"])
    config: M3terSinkSettings = m3ter_settings(
        meter_codes={policy: "api_calls"}, cores_meter_codes={policy: "cpu_cores"}
    )
    client = httpx.Client(transport=httpx.MockTransport(fake))
    drain(Relay(store.uows, [M3terSink(config, client=client, clock=clock)], store.clock))
    assert list(fake.accepted) == ids
    measured = [(m["meter"], m["measure"]) for m in fake.accepted.values()]
    assert measured == expected("cpu_cores", "cores", "api_calls", "units")
