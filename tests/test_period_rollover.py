"""Lazy rollover and the closing job, on real SQLite and PostgreSQL.

For any sequence of usage changes, clock jumps (forward and back) and scheduler runs, every
closed period's count equals the ledger changes timestamped inside it, the periods tile time
with no gap or overlap, and each (license, period) is closed exactly once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.errors import UsesInvalid, UsesLimitExceeded
from bridge.domain.model import UsageKind
from bridge.service.licenses import create_license
from bridge.service.periods import close_due_periods
from bridge.service.policies import create_policy
from bridge.service.products import create_product
from bridge.service.usage import UsageChange
from bridge.store.tables import UsagePeriodRow, ledger, licenses
from bridge.testing import FakeClock
from tests.conftest import make_container

ADMIN = Principal(Role.ADMIN, "admin")
periods_table = UsagePeriodRow.__table__  # type: ignore[attr-defined]
DAILY = {"interval": "day", "timezone": "America/New_York"}

ops = st.lists(
    st.one_of(
        st.tuples(st.just("increment"), st.integers(-2, 6)),
        st.tuples(st.just("decrement"), st.integers(0, 3)),
        st.tuples(st.just("reset"), st.just(0)),
        st.tuples(st.just("jump"), st.integers(-3, 80)),  # hours; backwards too
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=25,
)


def new_license(container: Container, rule: dict[str, Any], max_uses: int | None = 20) -> str:
    uows, clock = container.uows, container.clock
    product = create_product(uows, clock, ADMIN, NewProduct(name="App"))
    attrs = {"name": "Metered", "max_uses": max_uses, "usage_period": rule}
    policy = create_policy(uows, clock, ADMIN, NewPolicy(product.id, **attrs))
    return create_license(uows, clock, ADMIN, NewLicense(policy.id)).id


def read_state(container: Container, license_id: str) -> tuple[Any, list[Any], list[Any]]:
    with container.engine.connect() as conn:
        lic = conn.execute(select(licenses).where(licenses.c.id == license_id)).mappings().one()
        entries = list(
            conn.execute(select(ledger).where(ledger.c.license_id == license_id)).mappings()
        )
        closed = list(
            conn.execute(
                select(periods_table)
                .where(periods_table.c.license_id == license_id)
                .order_by(periods_table.c.period_start)
            ).mappings()
        )
    return lic, entries, closed


def check_invariants(container: Container, license_id: str, created: datetime) -> int:
    """The invariants of the docstring; returns how many periods are closed."""
    lic, entries, closed = read_state(container, license_id)
    changes = [e for e in entries if e["kind"] != UsageKind.PERIOD_RESET.value]
    resets = {e["id"]: e for e in entries if e["kind"] == UsageKind.PERIOD_RESET.value}

    def net(start: datetime, end: datetime | None) -> int:
        return sum(
            e["delta"]
            for e in changes
            if e["occurred_at"] >= start and (end is None or e["occurred_at"] < end)
        )

    expected_start = created
    for period in closed:
        assert period["period_start"] == expected_start  # contiguous: no gap, no overlap
        assert period["period_start"] < period["period_end"]
        assert period["uses_at_close"] == period["uses_at_open"] + net(
            period["period_start"], period["period_end"]
        )
        reset = resets.pop(period["reset_entry_id"])
        assert reset["occurred_at"] == period["period_end"]
        assert reset["delta"] == -period["uses_at_close"]
        expected_start = period["period_end"]
    assert not resets  # one reset entry per closed period, and no other
    assert lic["period_start"] == expected_start
    assert lic["uses"] == lic["period_open_uses"] + net(lic["period_start"], None)
    return len(closed)


def run_sequence(container: Container, clock: FakeClock, sequence: list[tuple[str, int]]) -> None:
    created = clock.now()
    license_id = new_license(container, DAILY)
    usage = container.usage()
    for op, n in sequence:
        if op == "jump":
            clock.advance(hours=n)
        elif op == "close":
            close_due_periods(container.uows, clock)
        else:
            # A rejected change writes nothing, not even its rollover.
            with contextlib.suppress(UsesLimitExceeded, UsesInvalid):
                usage.apply(ADMIN, UsageChange(license_id, UsageKind(op), n))
    clock.advance(days=3)
    close_due_periods(container.uows, clock)
    check_invariants(container, license_id, created)


@pytest.fixture
def shared(db_url: str) -> Iterator[tuple[Container, FakeClock]]:
    clock = FakeClock(datetime(2026, 3, 6, 20, tzinfo=UTC))  # a DST change two days later
    container = make_container(db_url, clock)
    yield container, clock
    container.dispose()


def test_rollover_matches_the_ledger_for_any_sequence(
    shared: tuple[Container, FakeClock],
) -> None:
    container, clock = shared
    examples = 40 if container.engine.dialect.name == "sqlite" else 15

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(sequence=ops)
    def check(sequence: list[tuple[str, int]]) -> None:
        run_sequence(container, clock, sequence)

    check()


def test_idle_license_gets_one_record_per_missed_period(
    shared: tuple[Container, FakeClock],
) -> None:
    """Scheduler down across three month ends: three records, in order, once each."""
    container, clock = shared
    clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    license_id = new_license(container, {"interval": "month"})
    container.usage().apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 5))
    clock.set(datetime(2026, 4, 2, tzinfo=UTC))
    assert close_due_periods(container.uows, clock) == 3
    assert close_due_periods(container.uows, clock) == 0  # nothing left, nothing twice
    lic, _, closed = read_state(container, license_id)
    assert [(p["period_start"].month, p["uses_at_close"]) for p in closed] == [
        (1, 5),
        (2, 0),
        (3, 0),
    ]
    assert closed[0]["period_start"] == datetime(2026, 1, 10, tzinfo=UTC)
    assert closed[0]["increments"] == 5
    assert closed[0]["entries"] == 1
    assert [p["closed_by"] for p in closed] == ["scheduler"] * 3
    assert (lic["uses"], lic["period_end"]) == (0, datetime(2026, 5, 1, tzinfo=UTC))
    check_invariants(container, license_id, datetime(2026, 1, 10, tzinfo=UTC))


def test_change_after_a_boundary_starts_the_new_period_at_zero(
    shared: tuple[Container, FakeClock],
) -> None:
    """No scheduler at all: the first change after the boundary rolls over in its own
    transaction, so a license at its limit can use the new period's allowance."""
    container, clock = shared
    clock.set(datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    license_id = new_license(container, {"interval": "month"}, max_uses=3)
    usage = container.usage()
    usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 3))
    with pytest.raises(UsesLimitExceeded):
        usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))  # exactly on the boundary: the new period
    outcome = usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
    assert outcome.license.uses == 1
    assert outcome.license.period_start == datetime(2026, 2, 1, tzinfo=UTC)
    _, _, closed = read_state(container, license_id)
    assert [(p["uses_at_close"], p["closed_by"]) for p in closed] == [(3, "usage")]


def test_manual_reset_is_recorded_as_such_inside_the_period(
    shared: tuple[Container, FakeClock],
) -> None:
    container, clock = shared
    clock.set(datetime(2026, 1, 5, tzinfo=UTC))
    license_id = new_license(container, {"interval": "month"})
    usage = container.usage()
    usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 4))
    usage.apply(ADMIN, UsageChange(license_id, UsageKind.RESET))
    usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 2))
    clock.set(datetime(2026, 2, 3, tzinfo=UTC))
    close_due_periods(container.uows, clock)
    _, entries, closed = read_state(container, license_id)
    assert [e["kind"] for e in sorted(entries, key=lambda e: e["seq"])] == [
        "increment",
        "reset",
        "increment",
        "period_reset",
    ]
    assert (closed[0]["uses_at_close"], closed[0]["resets"], closed[0]["increments"]) == (2, 1, 6)


def test_concurrent_closers_close_each_period_once(db_url: str) -> None:
    """Two schedulers and a stream of usage changes race over the same boundaries."""
    clock = FakeClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    container = make_container(db_url, clock)
    try:
        ids = [new_license(container, {"interval": "day"}) for _ in range(20)]
        usage = container.usage()
        for license_id in ids:
            usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 2))
        clock.advance(days=3)
        errors: list[BaseException] = []

        def close() -> None:
            try:
                close_due_periods(container.uows, clock, batch=3)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def use() -> None:
            try:
                for license_id in ids:
                    usage.apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 1))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (close, close, use)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for license_id in ids:
            assert (
                check_invariants(container, license_id, datetime(2026, 1, 1, 12, tzinfo=UTC)) == 3
            )
            lic, _, _ = read_state(container, license_id)
            assert lic["uses"] == 1
            assert lic["period_start"] == datetime(2026, 1, 4, tzinfo=UTC)
    finally:
        container.dispose()


def test_reading_an_idle_license_shows_the_current_period(
    shared: tuple[Container, FakeClock],
) -> None:
    container, clock = shared
    clock.set(datetime(2026, 1, 5, tzinfo=UTC))
    license_id = new_license(container, {"interval": "month"})
    container.usage().apply(ADMIN, UsageChange(license_id, UsageKind.INCREMENT, 4))
    clock.set(datetime(2026, 3, 5, tzinfo=UTC))
    with container.uows() as uow:
        stored = uow.licenses.get(license_id)
    assert stored is not None
    assert stored.uses == 4  # nothing written yet
    current = stored.current(clock.now())
    assert (current.uses, current.period_start) == (0, datetime(2026, 3, 1, tzinfo=UTC))
    assert current.period_end - current.period_start == timedelta(days=31)  # type: ignore[operator]
