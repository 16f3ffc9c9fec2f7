"""The store's own contracts: one encoding per value, one projection per license, one unit of
work behind both Protocols."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bridge.bootstrap import Container
from bridge.domain.delivery import LicenseFacts
from bridge.domain.errors import ServiceUnavailable
from bridge.domain.model import (
    ExpirationBasis,
    License,
    Machine,
    OverageStrategy,
    Policy,
    Product,
    Terms,
)
from bridge.domain.periods import PeriodInterval, PeriodRule
from bridge.store.licenses import FactsCache
from bridge.store.uow import SqlUnitOfWork
from bridge.testing import FakeClock
from tests.conftest import make_container

ODD = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)  # a microsecond part with leading zeros
MONTHLY = PeriodRule(PeriodInterval.MONTH)


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(db_url, clock)
    yield container
    container.dispose()


def add_license(container: Container, **overrides: object) -> License:
    """A product, a metered policy (uses 10, machines 3, cores 8, expiry an hour after the first
    use, monthly periods) and a license with ``overrides``, written through the store."""
    product = Product("prod", "p", None, {}, ODD, ODD)
    policy = Policy(
        "pol", "prod", "p", 10, 3, 8, True, False, OverageStrategy.NO_OVERAGE, False, 3600,
        ExpirationBasis.FROM_FIRST_USE, {}, ODD, ODD, MONTHLY,
    )  # fmt: skip
    lic = License(
        "lic", "KEY-123456", None, "pol", "prod", 0, None, False, False, None, {"a": [1]}, ODD,
        ODD, policy.terms,
    ).replace(**overrides).under(policy.terms)  # fmt: skip
    with container.uows(write=True) as uow:
        uow.products.add(product)
        uow.policies.add(policy)
        uow.licenses.add(lic)
        uow.commit()
    return lic


def test_both_access_styles_store_a_time_as_the_same_text(
    sqlite_url: str, clock: FakeClock
) -> None:
    """On SQLite a time written on the driver cursor (a license) and one written through
    SQLAlchemy Core (a machine) are the same text, so either side reads and compares both."""
    container = make_container(sqlite_url, clock)
    try:
        add_license(container)
        machine = Machine("m", "lic", "fp", 1, None, None, None, {}, ODD, ODD)
        with container.uows(write=True) as uow:
            uow.machines.add(machine)
            uow.commit()
        with container.engine.connect() as conn:
            cursor_side = conn.execute(text("SELECT created FROM licenses")).scalar_one()
            core_side = conn.execute(text("SELECT created FROM machines")).scalar_one()
            assert conn.execute(text("SELECT expiry FROM licenses")).scalar_one() is None
    finally:
        container.dispose()
    assert cursor_side == core_side == "2026-03-04 05:06:07.000089"


def test_a_license_reads_the_same_by_every_query(store: Container) -> None:
    """find, get and list map the one projection: the license, its overrides and its effective
    terms (overrides over the policy's, an override of 0 ignored) whichever query read it."""
    lic = add_license(store, max_uses_override=0, max_cores_override=16)
    assert lic.terms == Terms(10, 3, 16, 3600, MONTHLY, strict=False, floating=True)
    with store.uows() as uow:
        found, got = uow.licenses.find(lic.key), uow.licenses.get(lic.id)
        listed, total = uow.licenses.list(offset=0, limit=10, product_id="prod", policy_id=None)
    assert found == got == listed[0] == lic
    assert total == 1

    with store.uows(write=True) as uow:
        uow.licenses.update(lic.replace(max_uses_override=4, max_cores_override=None))
        updated = uow.licenses.get(lic.id)
        uow.commit()
    assert updated is not None
    assert updated.terms == Terms(4, 3, 8, 3600, MONTHLY, strict=False, floating=True)


def test_the_usage_view_is_the_same_unit_of_work(store: Container) -> None:
    """The usage path's factory hands out the one unit of work class, as a write."""
    with store.usage_uows() as uow:
        assert isinstance(uow, SqlUnitOfWork)
        assert uow.idempotency.get("nobody", "no-key") is None


def test_a_connection_the_server_dropped_is_not_reused(pg_url: str, clock: FakeClock) -> None:
    """A unit of work whose connection the server dropped fails as ServiceUnavailable (503,
    retry), and the connection leaves the pool: the next unit of work works."""
    container = make_container(pg_url, clock)
    killer = create_engine(pg_url, poolclass=NullPool)
    try:
        with container.usage_uows() as uow:  # the pool now holds one connection
            assert uow.licenses.find("nobody") is None
        with killer.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        with pytest.raises(ServiceUnavailable), container.usage_uows() as uow:
            uow.licenses.find("nobody")
        with container.usage_uows() as uow:
            assert uow.licenses.find("nobody") is None
    finally:
        killer.dispose()
        container.dispose()


def test_the_facts_cache_is_keyed_by_every_stored_value() -> None:
    """The claims' license facts: the same stored values give the same facts, any changed
    value (key, policy, metadata) new ones; a gone license (no key) has none; a full cache
    starts over instead of answering stale facts; decoded metadata (PostgreSQL) is not cached."""
    cache = FactsCache(size=2)
    first = cache.get("lic", "k", "pol", '{"a": 1}')
    assert first == LicenseFacts("lic", "k", "pol", {"a": 1})
    assert cache.get("lic", "k", "pol", '{"a": 1}') is first
    assert cache.get("lic", "k", "pol", '{"a": 2}') == LicenseFacts("lic", "k", "pol", {"a": 2})
    assert cache.get("lic", "k2", "pol", '{"a": 1}') == LicenseFacts("lic", "k2", "pol", {"a": 1})
    assert cache.get("lic", "k", "pol2", '{"a": 1}') == LicenseFacts("lic", "k", "pol2", {"a": 1})
    assert cache.get("lic", None, "pol", None) is None
    again = cache.get("lic", "k", "pol", '{"a": 1}')
    assert again == first
    decoded = {"a": 1}
    assert cache.get("lic", "k", "pol", decoded) == first
    assert cache.get("lic", "k", "pol", decoded) is not cache.get("lic", "k", "pol", decoded)
