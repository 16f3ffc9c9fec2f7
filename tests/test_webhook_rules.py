"""Each webhook rule end to end: signed deliveries over a real server on loopback, handled by
the webhook worker, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bridge.bootstrap import Container, build_app
from bridge.service.periods import close_due_periods
from bridge.testing import FakeClock
from tests import webhook_signing as sign
from tests.conftest import Api, make_container
from tests.fakes.lago import FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.webhook_server import ServedApp

LAGO_KEY = "lago-hmac-token"
LAGO_API_KEY = "lago-test-key"
STRIPE_SECRET = "whsec_test_secret"
M3TER_KEY, M3TER_SECRET = "m3ter-api-key", "m3ter-secret"
MONTHLY = {"interval": "month", "anchor": "CALENDAR", "timezone": "UTC"}
T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)


class Hooks:
    """The served bridge, a client for its API, and senders signing like each provider."""

    def __init__(self, container: Container, http: httpx.Client, clock: FakeClock) -> None:
        self.c = container
        self.api = Api(http)  # type: ignore[arg-type]
        self.http = http
        self.clock = clock
        self.sent = 0

    def _key(self) -> str:
        self.sent += 1
        return f"delivery-{self.sent}"

    def lago(self, kind: str, obj_type: str, obj: dict[str, Any], key: str | None = None) -> Any:
        body = sign.body_of(
            {"webhook_type": kind, "object_type": obj_type, "organization_id": "o", obj_type: obj}
        )
        headers = sign.lago_hmac(LAGO_KEY, body, key or self._key())
        return self.http.post("/v1/webhooks/lago", content=body, headers=headers)

    def stripe(self, kind: str, obj: dict[str, Any]) -> Any:
        body = sign.body_of({"id": f"evt_{self._key()}", "type": kind, "data": {"object": obj}})
        headers = sign.stripe([STRIPE_SECRET], body, self.clock.now())
        return self.http.post("/v1/webhooks/stripe", content=body, headers=headers)

    def m3ter(self, kind: str, data: dict[str, Any]) -> Any:
        body = sign.body_of({"id": self._key(), "eventName": kind, "newData": data})
        url = str(self.http.base_url.join("/v1/webhooks/m3ter"))
        headers = sign.m3ter(M3TER_KEY, M3TER_SECRET, url, body, self.clock.now())
        return self.http.post("/v1/webhooks/m3ter", content=body, headers=headers)

    def handle(self) -> None:
        """The worker handles what is due (the test drives it: no timing)."""
        worker = self.c.webhook_worker()
        while worker.run_once():
            pass

    def license(self, **metadata: Any) -> str:
        policy = self.api.policy(usagePeriod=MONTHLY, maxUses=100)
        return str(self.api.license(policy, metadata=metadata)["id"])

    def attrs(self, license_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.ok("GET", f"/v1/licenses/{license_id}")["data"][
            "attributes"
        ]
        return found

    def delivery(self, id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.ok("GET", f"/v1/webhook-deliveries/{id}")["data"][
            "attributes"
        ]
        return found

    def periods(self, license_id: str) -> list[tuple[Any, ...]]:
        with self.c.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT period_start, period_end, uses_at_close, closed_by FROM usage_periods"
                    " WHERE license_id = :id ORDER BY period_start"
                ),
                {"id": license_id},
            )
            return [tuple(r) for r in rows]

    def effects(self, license_id: str) -> list[tuple[str, str]]:
        """The license's webhook history, as the API shows it."""
        doc = self.api.ok("GET", f"/v1/licenses/{license_id}/webhook-effects")
        return [(e["attributes"]["action"], e["attributes"]["deliveryId"]) for e in doc["data"]]


@pytest.fixture
def lago() -> FakeLago:
    return FakeLago(LAGO_API_KEY)


@pytest.fixture
def hooks(db_url: str, clock: FakeClock, lago: FakeLago) -> Iterator[Hooks]:
    clock.set(T0)
    with LoopbackServer(lago) as lago_http:
        settings: dict[str, Any] = {
            "sinks": {
                "lago": {
                    "enabled": True,
                    "api_url": lago_http.url,
                    "api_key": LAGO_API_KEY,
                    "default_metric_code": "api_calls",
                }
            },
            "webhooks": {
                "lago": {
                    "hmac_key": LAGO_KEY,
                    "rules": {"invoice.payment_overdue": "suspend"},
                },
                "stripe": {"secrets": [STRIPE_SECRET]},
                "m3ter": {
                    "api_key": M3TER_KEY,
                    "secret": M3TER_SECRET,
                    "account_template": "{license.metadata.m3ter_account}",
                },
                "max_attempts": 2,
            },
        }
        c = make_container(db_url, clock, **settings)
        try:
            with (
                ServedApp(build_app(c)) as served,
                httpx.Client(base_url=served.url, timeout=30) as http,
            ):
                yield Hooks(c, http, clock)
        finally:
            c.dispose()


def test_lago_termination_suspends_and_a_new_start_reinstates(hooks: Hooks) -> None:
    """subscription.terminated suspends the license (validation answers Keygen's SUSPENDED,
    and the application's own increments with `License <key>` Keygen's 403 LICENSE_SUSPENDED;
    an admin's or product's still count, as Keygen's do); subscription.started of the same
    subscription reinstates it; both effects are in the license's history under their ids."""
    lic = hooks.license(lago_subscription_id="sub-1")
    key = hooks.attrs(lic)["key"]
    sub = {"external_id": "sub-1"}
    assert hooks.lago("subscription.terminated", "subscription", sub, "term-1").status_code == 200
    hooks.handle()
    assert hooks.attrs(lic)["suspended"] is True
    assert validation(hooks, lic) == "SUSPENDED"
    refused = hooks.api.increment(lic, 1, headers={"Authorization": f"License {key}"})
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "LICENSE_SUSPENDED"
    assert hooks.attrs(lic)["uses"] == 0
    hooks.lago("subscription.started", "subscription", sub, "start-1")
    hooks.handle()
    assert hooks.attrs(lic)["suspended"] is False
    assert validation(hooks, lic) == "VALID"
    assert hooks.effects(lic) == [
        ("suspend", "term-1"),
        ("align_period", "start-1"),
        ("reinstate", "start-1"),
    ]


def test_a_new_start_does_not_lift_a_suspension_made_by_hand(hooks: Hooks) -> None:
    """An operator's suspension stays: only a suspension this provider's webhook made is
    lifted by subscription.started."""
    lic = hooks.license(lago_subscription_id="sub-1")
    hooks.api.ok("POST", f"/v1/licenses/{lic}/actions/suspend")
    hooks.lago("subscription.started", "subscription", {"external_id": "sub-1"})
    hooks.handle()
    assert hooks.attrs(lic)["suspended"] is True


def test_a_redelivered_termination_is_applied_once(hooks: Hooks) -> None:
    """The same X-Lago-Unique-Key three times: one delivery, one effect."""
    lic = hooks.license(lago_subscription_id="sub-1")
    for _ in range(3):
        hooks.lago("subscription.terminated", "subscription", {"external_id": "sub-1"}, "t-1")
        hooks.handle()
    assert hooks.effects(lic) == [("suspend", "t-1")]


def test_payment_overdue_follows_its_rule_and_stripe_payment_failed_only_flags(
    hooks: Hooks,
) -> None:
    """Lago's rule was overridden to suspend; Stripe's default flags (recorded, not suspended)."""
    lago_lic = hooks.license(lago_subscription_id="sub-1")
    stripe_lic = hooks.license(stripe_subscription_id="sub_S")
    invoice = {"invoice_type": "subscription", "subscriptions": [{"external_id": "sub-1"}]}
    hooks.lago("invoice.payment_overdue", "invoice", invoice)
    hooks.stripe("invoice.payment_failed", {"object": "invoice", "subscription": "sub_S"})
    hooks.handle()
    assert hooks.attrs(lago_lic)["suspended"] is True
    assert hooks.attrs(stripe_lic)["suspended"] is False
    assert [a for a, _ in hooks.effects(stripe_lic)] == ["flag"]


def test_stripe_subscription_deleted_suspends(hooks: Hooks) -> None:
    lic = hooks.license(stripe_subscription_id="sub_S")
    hooks.stripe("customer.subscription.deleted", {"object": "subscription", "id": "sub_S"})
    hooks.handle()
    assert hooks.attrs(lic)["suspended"] is True


def test_unknown_types_are_ignored_and_unknown_subscriptions_wait_for_replay(
    hooks: Hooks,
) -> None:
    """An event no rule handles is stored as ignored; one for a subscription no license maps
    to is unmatched, and applied by a replay once the license exists."""
    other = hooks.lago("customer.updated", "customer", {"external_id": "c"}).json()["data"]["id"]
    early = hooks.lago("subscription.terminated", "subscription", {"external_id": "sub-new"})
    early_id = early.json()["data"]["id"]
    hooks.handle()
    assert hooks.delivery(other)["status"] == "ignored"
    assert hooks.delivery(early_id)["status"] == "unmatched"
    lic = hooks.license(lago_subscription_id="sub-new")
    from bridge.service.webhooks import replay

    replay(hooks.c.uows, hooks.clock, int(early_id))
    hooks.handle()
    assert hooks.delivery(early_id)["status"] == "applied"
    assert hooks.attrs(lic)["suspended"] is True


def test_lago_invoice_closes_the_period_at_its_boundary_exactly_once(hooks: Hooks) -> None:
    """invoice.created closes the open period at the invoiced boundary (here before the local
    calendar's) and opens Lago's next period; a second invoice for the same boundary, the
    scheduler and the lazy rollover close nothing more."""
    lic = hooks.license(lago_subscription_id="sub-1")
    assert hooks.api.increment(lic, 7).status_code == 200
    hooks.clock.set(datetime(2026, 1, 20, 1, tzinfo=UTC))
    invoice = {
        "invoice_type": "subscription",
        "subscriptions": [
            {
                "external_id": "sub-1",
                "current_billing_period_started_at": "2026-01-20T00:00:00Z",
                "current_billing_period_ending_at": "2026-02-19T23:59:59Z",
            }
        ],
    }
    hooks.lago("invoice.created", "invoice", invoice)
    hooks.lago("invoice.created", "invoice", invoice)  # another delivery, the same boundary
    hooks.handle()
    closed = hooks.periods(lic)
    assert len(closed) == 1
    start, end, uses, by = closed[0]
    assert (_utc(start), _utc(end), uses, by) == (
        T0,
        datetime(2026, 1, 20, tzinfo=UTC),
        7,
        "webhook",
    )
    a = hooks.attrs(lic)
    assert (a["uses"], a["periodStart"], a["periodEnd"]) == (
        0,
        "2026-01-20T00:00:00Z",
        "2026-02-20T00:00:00Z",
    )
    assert close_due_periods(hooks.c.uows, hooks.clock) == 0
    assert hooks.api.increment(lic, 1).status_code == 200
    assert len(hooks.periods(lic)) == 1


def test_after_the_scheduler_closed_it_an_invoice_closes_nothing(hooks: Hooks) -> None:
    """The local boundary came first and the scheduler closed it: the invoice for the same
    boundary finds the period closed."""
    lic = hooks.license(lago_subscription_id="sub-1")
    hooks.clock.set(datetime(2026, 2, 1, 0, 5, tzinfo=UTC))
    assert close_due_periods(hooks.c.uows, hooks.clock) == 1
    sub = {"external_id": "sub-1", "current_billing_period_started_at": "2026-02-01T00:00:00Z"}
    hooks.lago(
        "invoice.created", "invoice", {"invoice_type": "subscription", "subscriptions": [sub]}
    )
    hooks.handle()
    assert [p[3] for p in hooks.periods(lic)] == ["scheduler"]


def test_stripe_and_m3ter_invoices_close_the_period(hooks: Hooks) -> None:
    """Stripe invoice.created for a subscription cycle and m3ter's locked bill close at their
    period end; an m3ter bill neither locked nor approved and a one-off Stripe invoice do not."""
    s_lic = hooks.license(stripe_subscription_id="sub_S")
    m_lic = hooks.license(m3ter_account="acct-1")
    hooks.clock.set(datetime(2026, 1, 25, tzinfo=UTC))
    boundary = datetime(2026, 1, 20, tzinfo=UTC)
    one_off = {"object": "invoice", "subscription": "sub_S", "billing_reason": "manual"}
    hooks.stripe("invoice.created", {**one_off, "period_end": int(boundary.timestamp())})
    pending = {"accountCode": "acct-1", "status": "PENDING", "locked": False}
    hooks.m3ter("billing.bill.updated", {**pending, "endDateTimeUTC": "2026-01-20T00:00:00Z"})
    hooks.handle()
    assert hooks.periods(s_lic) == []
    assert hooks.periods(m_lic) == []
    cycle = {**one_off, "billing_reason": "subscription_cycle"}
    hooks.stripe("invoice.created", {**cycle, "period_end": int(boundary.timestamp())})
    hooks.m3ter(
        "billing.bill.updated",
        {**pending, "locked": True, "endDateTimeUTC": "2026-01-20T00:00:00Z"},
    )
    hooks.handle()
    for lic in (s_lic, m_lic):
        assert [_utc(p[1]) for p in hooks.periods(lic)] == [boundary]


def test_subscription_started_aligns_the_period_with_lago(hooks: Hooks, lago: FakeLago) -> None:
    """The period becomes the subscription's current billing period as Lago serves it
    (GET /subscriptions/{external_id}), not the event's copy: a reordered, older
    subscription.updated changes nothing."""
    lic = hooks.license(lago_subscription_id="sub-1")
    lago.subscribe("sub-1", "2026-01-05T00:00:00Z", "2026-02-04T23:59:59Z")
    stale = {
        "external_id": "sub-1",
        "current_billing_period_started_at": "2025-12-05T00:00:00Z",
        "current_billing_period_ending_at": "2026-01-04T23:59:59Z",
    }
    hooks.lago("subscription.updated", "subscription", stale)
    hooks.handle()
    a = hooks.attrs(lic)
    assert (a["periodStart"], a["periodEnd"]) == ("2026-01-05T00:00:00Z", "2026-02-05T00:00:00Z")
    assert hooks.periods(lic) == []  # the local period started after Lago's: no close


def test_events_errors_mark_the_entries_rejected_after_acceptance(hooks: Hooks) -> None:
    """Lago's events.errors names transaction ids (ledger entry ids) it will not bill: their
    outbox items become dead letters with the reason, shown by the outbox status, and the
    license's history names the delivery."""
    lic = hooks.license(lago_subscription_id="sub-1")
    entry = hooks.api.increment(lic, 1)
    assert entry.status_code == 200
    history = hooks.api.ok("GET", f"/v1/licenses/{lic}/usage")["data"]
    txn = history[0]["id"]
    hooks.lago("events.errors", "events_errors", {"invalid_code": [txn, "not-ours"]}, key="err-1")
    hooks.handle()
    letters = hooks.api.ok("GET", "/v1/outbox/dead-letters")["data"]
    assert [(d["attributes"]["entryId"], d["attributes"]["reason"]) for d in letters] == [
        (txn, "rejected_after_acceptance")
    ]
    assert "invalid_code" in letters[0]["attributes"]["error"]
    assert hooks.effects(lic) == [("reject_entries", "err-1")]  # in the license's history


def test_a_delivery_that_keeps_failing_is_parked(hooks: Hooks, lago: FakeLago) -> None:
    """Handling fails (Lago's subscription read answers 503): retried after a backoff, then
    parked as failed after max_attempts (2 here); nothing applied."""
    lic = hooks.license(lago_subscription_id="sub-1")
    lago.subscriptions.clear()
    lago.api_key = "rotated"  # every read is now refused: 401, a platform error
    d = hooks.lago("subscription.updated", "subscription", {"external_id": "sub-1"})
    did = d.json()["data"]["id"]
    hooks.handle()
    assert hooks.delivery(did)["status"] == "received"  # due again after its backoff
    hooks.clock.advance(seconds=5)
    hooks.handle()
    failed = hooks.delivery(did)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 2
    assert "PlatformUnavailable" in failed["lastError"]
    assert hooks.effects(lic) == []


def validation(hooks: Hooks, license_id: str) -> str:
    doc = hooks.api.ok("POST", f"/v1/licenses/{license_id}/actions/validate")
    return str(doc["meta"]["code"])


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
