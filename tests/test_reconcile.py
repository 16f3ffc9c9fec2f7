"""Reconciliation against the fake Lago and the fake m3ter, on SQLite and PostgreSQL.

Clean runs find nothing; an event lost at a platform is found and repaired with its original
id; an event only the platform holds is reported, never "repaired"; nothing outside the dedupe
window is resent.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.errors import ReconcileWindowInvalid
from bridge.domain.model import UsageKind
from bridge.domain.reconcile import Window
from bridge.service.common import PageRequest
from bridge.service.licenses import create_license
from bridge.service.periods import close_due_periods
from bridge.service.policies import create_policy
from bridge.service.products import create_product
from bridge.service.reconcile import reconciliation_report
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.retention import purge_outbox
from bridge.service.usage import UsageChange
from bridge.testing import FakeClock
from connectors.lago import LagoSink, LagoSinkSettings
from connectors.lago.reader import LagoReader
from connectors.m3ter import M3terSink
from connectors.m3ter.reader import M3terReader
from connectors.m3ter.settings import M3terSinkSettings
from tests.conftest import make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.m3ter import API, CLIENT_ID, CLIENT_SECRET, INGEST, ORG, FakeM3ter

ADMIN = Principal(Role.ADMIN, "admin")
JANUARY = Window.parse("2026-01")


@dataclasses.dataclass
class World:
    container: Container
    clock: FakeClock
    lago: FakeLago
    m3ter: FakeM3ter
    relay: Relay
    license_id: str

    def use(self, kind: UsageKind, amount: int) -> str:
        change = UsageChange(self.license_id, kind, amount)
        return self.container.usage().apply(ADMIN, change).entry_id

    def drain(self) -> None:
        while any(r.handled for r in self.relay.run_once().values()):
            pass

    def reconcile(self, **kwargs: Any) -> Any:
        return self.container.reconciler().run(JANUARY, **kwargs)

    def report(self, sink: str) -> Any:
        page = reconciliation_report(
            self.container.uows, JANUARY, sink, None, PageRequest(number=1, size=10)
        )
        assert len(page.items) == 1
        return page.items[0]


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    clock = FakeClock(datetime(2026, 1, 3, tzinfo=UTC))
    lago, m3ter = FakeLago("key"), FakeM3ter(clock)
    lago_settings = LagoSinkSettings(
        enabled=True, api_key=SecretStr("key"), default_metric_code="api_calls"
    )
    m3ter_settings = M3terSinkSettings.model_validate(
        {
            "enabled": True,
            "org_id": ORG,
            "api_url": API,
            "ingest_url": INGEST,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "default_meter_code": "api_calls",
        }
    )
    lago_sink = LagoSink(lago_settings, client=lago.client())
    m3ter_client = httpx.Client(transport=httpx.MockTransport(m3ter))
    m3ter_sink = M3terSink(m3ter_settings, client=m3ter_client, clock=clock)
    container = dataclasses.replace(
        make_container(db_url, clock),
        sinks=(lago_sink, m3ter_sink),
        readers={
            "lago": LagoReader(lago_settings, lago_sink.client),
            "m3ter": M3terReader(m3ter_settings, m3ter_client, m3ter_sink.auth),
        },
    )
    product = create_product(container.uows, clock, ADMIN, NewProduct(name="App"))
    attrs = {"name": "Monthly", "usage_period": {"interval": "month"}}
    policy = create_policy(container.uows, clock, ADMIN, NewPolicy(product.id, **attrs))
    metadata = {"lago_subscription_id": "sub_1", "m3ter_account_code": "acct_1"}
    license_id = create_license(
        container.uows, clock, ADMIN, NewLicense(policy.id, metadata=metadata)
    ).id
    relay = Relay(container.uows, container.sinks, clock, RelayPolicy(), random.Random(0))
    yield World(container, clock, lago, m3ter, relay, license_id)
    assert lago.violations == []
    container.dispose()


def january(world: World) -> list[str]:
    """Six changes in January, all delivered, then the period closed on February 2nd."""
    ids = []
    for day, (kind, amount) in enumerate(
        [
            (UsageKind.INCREMENT, 3),
            (UsageKind.INCREMENT, 2),
            (UsageKind.DECREMENT, 1),
            (UsageKind.INCREMENT, 4),
            (UsageKind.RESET, 0),
            (UsageKind.INCREMENT, 5),
        ]
    ):
        world.clock.set(datetime(2026, 1, 5 + day, 12, tzinfo=UTC))
        ids.append(world.use(kind, amount))
    world.drain()
    world.clock.set(datetime(2026, 2, 2, tzinfo=UTC))
    assert close_due_periods(world.container.uows, world.clock) == 1
    return ids


def test_a_clean_period_agrees_everywhere(world: World) -> None:
    ids = january(world)
    summary = world.reconcile()
    assert (summary.periods, summary.checked, summary.ok, summary.mismatched) == (1, 2, 2, 0)
    for sink in ("lago", "m3ter"):
        found = world.report(sink)
        assert found.status == "ok"
        # The reset is not usage: 3 + 2 - 1 + 4 + 5 over five forwarded changes.
        assert (found.ledger_total, found.ledger_count) == (13, 5)
        assert (found.delivered_total, found.platform_total, found.platform_count) == (13, 13, 5)
    assert len(ids) == 6


def test_a_lost_event_is_found_and_repaired_with_its_original_id(world: World) -> None:
    ids = january(world)
    world.lago.delete(ids[3])
    world.m3ter.lose(ids[3])

    summary = world.reconcile()
    assert summary.mismatched == 2
    lago, m3ter = world.report("lago"), world.report("m3ter")
    assert (lago.status, lago.missing, lago.platform_total) == ("mismatch", (ids[3],), 9)
    assert (m3ter.status, m3ter.platform_total, m3ter.platform_count) == ("mismatch", 9, 4)
    assert (world.lago.ingested.count(ids[3]), lago.repaired) == (1, 0)  # reported only

    repaired = world.reconcile(repair=True)
    # Lago names the lost event; m3ter only reports totals, so every change of the period is
    # resent there and its uid dedupe keeps the four it holds from counting twice.
    assert repaired.resent == 1 + 5
    world.drain()
    assert world.lago.ingested.count(ids[3]) == 2  # the same transaction_id, sent again
    assert ids[3] in world.m3ter.accepted
    assert world.reconcile().ok == 2
    assert world.report("m3ter").platform_total == 13


def test_an_event_only_the_platform_holds_is_reported_not_repaired(world: World) -> None:
    january(world)
    world.lago.inject(
        {
            "transaction_id": "foreign-1",
            "external_subscription_id": "sub_1",
            "code": "api_calls",
            "timestamp": "1768000000.000",  # 2026-01-09
            "properties": {"units": 7},
        }
    )
    world.m3ter.inject(
        {
            "uid": "foreign-1",
            "meter": "api_calls",
            "account": "acct_1",
            "ts": "2026-01-09T00:00:00.000Z",
            "measure": {"units": 7},
        }
    )
    summary = world.reconcile(repair=True)
    assert (summary.mismatched, summary.resent) == (2, 0)
    lago, m3ter = world.report("lago"), world.report("m3ter")
    assert (lago.unknown, lago.missing, lago.platform_total) == (("foreign-1",), (), 20)
    assert (m3ter.platform_total, m3ter.repaired) == (20, 0)


def test_nothing_is_resent_outside_the_dedupe_window(world: World) -> None:
    ids = january(world)
    world.lago.delete(ids[0])
    world.m3ter.lose(ids[0])
    world.clock.set(datetime(2026, 3, 20, tzinfo=UTC))  # 74 days after the change
    summary = world.reconcile(repair=True)
    assert summary.resent == 0
    assert world.report("lago").unrepairable == 1
    assert world.report("m3ter").unrepairable == 5
    world.drain()
    assert ids[0] not in world.m3ter.accepted


def test_a_report_only_run_applies_the_same_window_as_a_repair(world: World) -> None:
    """A run without --repair (the daily job) says what a repair would resend: a change lost
    inside the platform's dedupe window is resendable, not unrepairable; only changes outside
    the window are counted as beyond it, in the summary and in the stored finding alike."""
    ids = january(world)
    world.lago.delete(ids[3])
    world.m3ter.lose(ids[3])
    report = world.reconcile()  # the day after the period closed: well inside both windows
    assert (report.resent, report.resendable, report.unrepairable) == (0, 1 + 5, 0)
    lago, m3ter = world.report("lago"), world.report("m3ter")
    assert (lago.missing, lago.resendable, lago.unrepairable) == ((ids[3],), 1, 0)
    assert (m3ter.resendable, m3ter.unrepairable) == (5, 0)  # totals only: the whole period
    assert world.lago.ingested.count(ids[3]) == 1  # a report resends nothing
    assert world.reconcile(repair=True).resent == report.resendable
    world.drain()

    world.lago.delete(ids[3])
    world.m3ter.lose(ids[3])
    world.clock.set(datetime(2026, 3, 20, tzinfo=UTC))  # 74 days after the change
    late = world.reconcile()
    assert (late.resent, late.resendable, late.unrepairable) == (0, 0, 1 + 5)
    lago, m3ter = world.report("lago"), world.report("m3ter")
    assert (lago.resendable, lago.unrepairable, m3ter.resendable, m3ter.unrepairable) == (
        0,
        1,
        0,
        5,
    )


def test_undelivered_changes_are_a_mismatch_until_delivered(world: World) -> None:
    world.clock.set(datetime(2026, 1, 10, tzinfo=UTC))
    world.use(UsageKind.INCREMENT, 2)  # not drained: still in the outbox
    world.clock.set(datetime(2026, 2, 2, tzinfo=UTC))
    close_due_periods(world.container.uows, world.clock)
    world.reconcile()
    found = world.report("lago")
    assert (found.status, found.undelivered_count, found.platform_total) == ("mismatch", 1, 0)
    world.drain()
    world.reconcile()
    assert world.report("lago").status == "ok"


def test_an_unreadable_platform_is_unchecked(world: World) -> None:
    january(world)
    world.lago.api_key = "rotated"  # every read now answers 401
    summary = world.reconcile()
    assert summary.unchecked == 1
    assert world.report("lago").status == "unchecked"


def test_window_parsing() -> None:
    assert Window.parse("2026-02").end - Window.parse("2026-02").start == timedelta(days=28)
    window = Window.parse(None, "2026-01-01", "2026-01-15T12:00:00+01:00")
    assert window.end == datetime(2026, 1, 15, 11, tzinfo=UTC)
    bad = [
        ("2026-13",),
        ("26",),
        (None, "2026-01-02", "2026-01-01"),
        (None, "x", "y"),
        (None, "2026-01-01", None),
        ("2026-01", "2026-01-01", "2026-02-01"),
    ]
    for args in bad:
        with pytest.raises(ReconcileWindowInvalid):
            Window.parse(*args)


def test_purged_deliveries_still_count_as_delivered(world: World) -> None:
    """Once the delivered items of January are purged (past their retention), the period
    still reconciles as delivered and agreeing: a change without its item from before the
    sink's purge watermark was delivered."""
    january(world)
    world.clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    windows = world.container.outbox_retention()
    assert purge_outbox(world.container.uows, world.clock, windows) == 10
    summary = world.reconcile()
    assert (summary.checked, summary.ok, summary.mismatched) == (2, 2, 0)
    for sink in ("lago", "m3ter"):
        found = world.report(sink)
        assert (found.delivered_total, found.delivered_count, found.undelivered_count) == (13, 5, 0)
