"""Stateful property test: UsageService on a real database against a model of Keygen's rule.

The model below restates Keygen's usage rule on its own (it does not call
``bridge.domain.limits``), so a drift in either the domain function or the SQL guard shows up as
a difference between the service and the model.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bridge.api.sources import Source, source_of
from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.commands import LicensePatch, NewLicense, NewPolicy, NewProduct
from bridge.domain.errors import (
    BridgeError,
    IdempotencyKeyReused,
    IntegerTooLarge,
    MaxUsesInvalid,
    UsesInvalid,
    UsesLimitExceeded,
)
from bridge.domain.model import UsageKind
from bridge.service.licenses import create_license, update_license
from bridge.service.policies import create_policy
from bridge.service.products import create_product
from bridge.service.usage import UsageChange
from bridge.settings import load_settings
from bridge.testing import FakeClock

ADMIN = Principal(Role.ADMIN, "admin")
INT4 = 2_147_483_647  # PostgreSQL's integer, Keygen's column type: written out, not imported
POINTER = {UsageKind.INCREMENT: "/meta/increment", UsageKind.DECREMENT: "/meta/decrement"}
CLIENT_KINDS = (UsageKind.INCREMENT, UsageKind.DECREMENT, UsageKind.RESET)


# The model ----------------------------------------------------------------------------------
def effective_max(override: int | None, policy_max: int | None) -> int | None:
    """Keygen: the license's maxUses override unless it is null or 0, else the policy's."""
    return override if override not in (None, 0) else policy_max


def expected_uses(uses: int, delta: int, max_uses: int | None) -> int | type[BridgeError]:
    """The counter after ``delta``, or the error class Keygen answers, checked in Keygen's order."""
    new = uses + delta
    if delta != 0 and max_uses is not None and new > max_uses:  # limit only when it changes
        return UsesLimitExceeded
    if new < 0:
        return UsesInvalid
    if new > INT4:
        return IntegerTooLarge
    return new


@dataclass(frozen=True)
class Sent:
    """An accepted keyed request: what was sent and what was answered."""

    kind: UsageKind
    amount: int
    entry_id: str
    answered_uses: int


# Strategies ---------------------------------------------------------------------------------
EDGES = [0, 1, -1, INT4, INT4 + 1, -INT4, -(INT4 + 1), 2**32, -(2**32), 2**63, -(2**63), 2**80]
amounts = st.one_of(
    st.integers(-3, 12),  # mostly small: the interesting limits are near the counter
    st.just(0),  # the limit is not checked for +0 / -0, even above the maximum
    st.sampled_from(EDGES),
    st.integers(-(2**40), 2**40),
)
policy_maxima = st.one_of(st.none(), st.integers(0, 30), st.just(INT4))
overrides = st.one_of(
    st.none(),
    st.just(0),
    st.integers(1, 30),
    st.just(INT4),
    st.sampled_from([-1, INT4 + 1]),  # invalid: MaxUsesInvalid, nothing changes
)


class UsageMachine(RuleBasedStateMachine):
    """One fresh license per example in a shared database; keys are unique per example."""

    def __init__(self, container: Container) -> None:
        super().__init__()
        self.container = container
        self.usage = container.usage()
        self.prefix = uuid.uuid4().hex
        self.numbers = itertools.count()
        self.license_id = ""
        self.uses = 0
        self.rows = 0
        self.override: int | None = None
        self.policy_max: int | None = None
        self.sent: dict[str, Sent] = {}
        self.rejected_keys: list[str] = []  # used only by rejected requests: still unused

    @initialize(policy_max=policy_maxima)
    def create_license(self, policy_max: int | None) -> None:
        uows, clock = self.container.uows, self.container.clock
        product = create_product(uows, clock, ADMIN, NewProduct(name="App"))
        policy = create_policy(
            uows, clock, ADMIN, NewPolicy(product.id, name="Metered", max_uses=policy_max)
        )
        self.license_id = create_license(uows, clock, ADMIN, NewLicense(policy.id)).id
        self.policy_max = policy_max

    # Reading the store ------------------------------------------------------------------------
    def stored(self) -> tuple[int, int, int]:
        """(counter, ledger rows, sum of ledger deltas) of the license, as stored."""
        with self.container.uows() as uow:
            license = uow.licenses.get(self.license_id)
            assert license is not None
            _, rows = uow.ledger.history(self.license_id, offset=0, limit=1)
            return license.uses, rows, uow.ledger.total(self.license_id)

    def key_is_stored(self, key: str) -> bool:
        with self.container.usage_uows() as uow:
            return uow.idempotency.get(ADMIN.actor, key) is not None

    def new_key(self) -> str:
        return f"{self.prefix}-{next(self.numbers)}"

    # Applying a change ------------------------------------------------------------------------
    def apply(self, kind: UsageKind, amount: int, key: str | None) -> None:
        """Send one new (never seen) request and compare the answer with the model."""
        if kind is UsageKind.RESET:
            expected: int | type[BridgeError] = 0
            delta = -self.uses
        else:
            delta = amount if kind is UsageKind.INCREMENT else -amount
            limit = effective_max(self.override, self.policy_max)
            expected = expected_uses(self.uses, delta, limit)
        change = UsageChange(self.license_id, kind, amount, idempotency_key=key)

        if not isinstance(expected, int):
            with pytest.raises(expected) as raised:
                self.usage.apply(ADMIN, change)
            if expected is IntegerTooLarge:
                assert source_of(raised.value) == Source(pointer=POINTER[kind])
            # No trace: counter, ledger and idempotency store are as before.
            assert self.stored() == (self.uses, self.rows, self.uses)
            if key is not None:
                assert not self.key_is_stored(key)
                self.rejected_keys.append(key)
            return

        outcome = self.usage.apply(ADMIN, change)
        assert not outcome.replayed
        assert outcome.license.uses == expected
        self.uses, self.rows = expected, self.rows + 1
        with self.container.uows() as uow:
            entries, _ = uow.ledger.history(self.license_id, offset=0, limit=1)
        entry = entries[0]
        assert entry.id == outcome.entry_id
        assert (entry.kind, entry.delta, entry.uses_after) == (kind, delta, expected)
        assert entry.uses_before == expected - delta
        assert entry.idempotency_key == key
        if delta != 0:
            limit = effective_max(self.override, self.policy_max)
            assert limit is None or self.uses <= limit
        if key is not None:
            self.sent[key] = Sent(kind, amount, outcome.entry_id, expected)

    # Rules ------------------------------------------------------------------------------------
    @rule(amount=amounts, keyed=st.booleans())
    def increment(self, amount: int, keyed: bool) -> None:
        self.apply(UsageKind.INCREMENT, amount, self.new_key() if keyed else None)

    @rule(amount=amounts, keyed=st.booleans())
    def decrement(self, amount: int, keyed: bool) -> None:
        self.apply(UsageKind.DECREMENT, amount, self.new_key() if keyed else None)

    @rule(
        boundary=st.sampled_from(["zero", "max", "int4"]),
        offset=st.integers(-1, 1),
        kind=st.sampled_from([UsageKind.INCREMENT, UsageKind.DECREMENT]),
        keyed=st.booleans(),
    )
    def change_to_a_boundary(
        self, boundary: str, offset: int, kind: UsageKind, keyed: bool
    ) -> None:
        """A change landing just below, on or just past 0, the effective max or 2**31 - 1."""
        limit = effective_max(self.override, self.policy_max)
        edge = {"zero": 0, "max": limit if limit is not None else INT4, "int4": INT4}[boundary]
        delta = edge + offset - self.uses
        amount = delta if kind is UsageKind.INCREMENT else -delta
        self.apply(kind, amount, self.new_key() if keyed else None)

    @rule(keyed=st.booleans())
    def reset(self, keyed: bool) -> None:
        self.apply(UsageKind.RESET, 1, self.new_key() if keyed else None)

    @rule(value=overrides)
    def change_max_uses(self, value: int | None) -> None:
        uows, clock = self.container.uows, self.container.clock
        if value is not None and not 0 <= value <= INT4:
            with pytest.raises(MaxUsesInvalid):
                update_license(uows, clock, ADMIN, self.license_id, LicensePatch(max_uses=value))
        else:
            updated = update_license(
                uows, clock, ADMIN, self.license_id, LicensePatch(max_uses=value)
            )
            assert updated.max_uses_override == value
            assert updated.max_uses == effective_max(value, self.policy_max)
            self.override = value
        with self.container.uows() as uow:
            license = uow.licenses.get(self.license_id)
            assert license is not None
            assert license.max_uses_override == self.override
            assert license.uses == self.uses

    @precondition(lambda self: self.uses >= 2)
    @rule(data=st.data())
    def lower_max_uses_below_count(self, data: st.DataObject) -> None:
        """An override below the current count: the license is now above its maximum."""
        self.change_max_uses(data.draw(st.integers(1, self.uses - 1), label="value"))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.sent)), label="key")
        sent = self.sent[key]
        change = UsageChange(self.license_id, sent.kind, sent.amount, idempotency_key=key)
        outcome = self.usage.apply(ADMIN, change)
        assert outcome.replayed
        assert outcome.entry_id == sent.entry_id
        assert outcome.license.uses == sent.answered_uses  # the first answer, not today's count
        assert self.stored() == (self.uses, self.rows, self.uses)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def reuse_key_for_another_request(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.sent)), label="key")
        sent = self.sent[key]
        if sent.kind is UsageKind.RESET or data.draw(st.booleans(), label="other kind"):
            kind = data.draw(st.sampled_from([k for k in CLIENT_KINDS if k is not sent.kind]))
            amount = sent.amount if kind is not UsageKind.RESET else 1
        else:
            kind = sent.kind
            amount = data.draw(amounts.filter(lambda a: a != sent.amount), label="amount")
        change = UsageChange(self.license_id, kind, amount, idempotency_key=key)
        with pytest.raises(IdempotencyKeyReused):
            self.usage.apply(ADMIN, change)
        assert self.stored() == (self.uses, self.rows, self.uses)

    @precondition(lambda self: bool(self.rejected_keys))
    @rule(data=st.data(), amount=amounts)
    def reuse_rejected_key(self, data: st.DataObject, amount: int) -> None:
        """A key whose only request was rejected was never stored: any request may use it."""
        key = data.draw(st.sampled_from(self.rejected_keys), label="key")
        self.rejected_keys.remove(key)
        kind = data.draw(st.sampled_from([UsageKind.INCREMENT, UsageKind.DECREMENT]))
        self.apply(kind, amount, key)

    # Invariants -------------------------------------------------------------------------------
    @invariant()
    def counter_matches_ledger_and_model(self) -> None:
        if self.license_id:
            assert self.stored() == (self.uses, self.rows, self.uses)


def run_machine(container: Container, examples: int, *, shrink: bool = True) -> None:
    phases = [p for p in Phase if shrink or p is not Phase.shrink]
    run_state_machine_as_test(
        lambda: UsageMachine(container),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            phases=phases,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def container_for(url: str) -> Iterator[Container]:
    container = build(load_settings(database_url=url), clock=FakeClock())
    container.migrate()
    yield container
    container.dispose()


@pytest.fixture
def sqlite_container(sqlite_url: str) -> Iterator[Container]:
    yield from container_for(sqlite_url)


@pytest.fixture
def pg_container(pg_url: str) -> Iterator[Container]:
    yield from container_for(pg_url)


def test_usage_matches_model_on_sqlite(sqlite_container: Container) -> None:
    """On a SQLite file, every usage change, replay and override change follows the model."""
    run_machine(sqlite_container, examples=40)


def test_usage_matches_model_on_postgres(pg_container: Container) -> None:
    """On PostgreSQL, every usage change, replay and override change follows the model."""
    # Each step is a few round trips: shrinking a failure here would take minutes, so the
    # failing sequence is reported as found (the SQLite run above shrinks its failures).
    run_machine(pg_container, examples=15, shrink=False)
