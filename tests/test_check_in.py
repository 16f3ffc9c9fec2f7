"""Keygen's check-ins, and the offline usage records a check-in carries (keygen.md section 5)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from bridge.bootstrap import build_app
from bridge.cli import app
from bridge.domain.access import Principal, Role
from bridge.domain.commands import CheckIn, RawUsageRecord
from bridge.domain.reconcile import Window
from bridge.service.checkin import CheckInService
from bridge.service.common import PageRequest
from bridge.service.reconcile import reconciliation_report
from bridge.store import tables
from bridge.testing import FakeClock
from tests.conftest import Api, error_of, make_container
from tests.threads import run_in_threads

MONTHLY: dict[str, Any] = {"interval": "month", "count": 1, "anchor": "CALENDAR", "timezone": "UTC"}
CHECK_IN: dict[str, Any] = {
    "requireCheckIn": True,
    "checkInInterval": "day",
    "checkInIntervalCount": 1,
}


def record(n: int = 1, at: datetime | None = None, rid: str | None = None) -> dict[str, Any]:
    at = at or datetime(2026, 1, 1, tzinfo=UTC)
    return {"id": rid or str(uuid.uuid4()), "increment": n, "occurredAt": at.isoformat()}


def check_in(api: Api, ref: str, usage: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    body = {"meta": {"usage": usage}} if usage is not None else None
    return api.request("POST", f"/v1/licenses/{ref}/actions/check-in", json=body, **kw)


def statuses(response: Any) -> list[str]:
    return [r["status"] for r in response.json()["meta"]["usage"]]


@pytest.fixture
def db_api(db_url: str, clock: FakeClock) -> Iterator[Api]:
    container = make_container(db_url, clock)
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        yield Api(client)
    container.dispose()


def test_policy_check_in_terms_are_validated_as_keygen_does(api: Api) -> None:
    """Interval and count are checked only when check-ins are required, with Keygen's codes,
    details and pointers; the policy shows the three attributes."""
    body: dict[str, Any] = {
        "data": {"type": "policies", "attributes": {"name": "P", "requireCheckIn": True}}
    }
    body["data"]["relationships"] = {"product": {"data": {"type": "products", "id": api.product()}}}
    bad = api.request("POST", "/v1/policies", json=body)
    assert bad.status_code == 422
    assert error_of(bad) == {
        "title": "Unprocessable resource",
        "detail": "must be one of: day, week, month, year",
        "code": "CHECK_IN_INTERVAL_NOT_ALLOWED",
        "source": {"pointer": "/data/attributes/checkInInterval"},
    }
    body["data"]["attributes"] |= {"checkInInterval": "week", "checkInIntervalCount": 366}
    bad = api.request("POST", "/v1/policies", json=body)
    assert error_of(bad) == {
        "title": "Unprocessable resource",
        "detail": "must be a number between 1 and 365 inclusive",
        "code": "CHECK_IN_INTERVAL_COUNT_NOT_ALLOWED",
        "source": {"pointer": "/data/attributes/checkInIntervalCount"},
    }
    policy = api.ok("GET", f"/v1/policies/{api.policy(checkInInterval='fortnight')}")
    assert policy["data"]["attributes"]["requireCheckIn"] is False  # not required: not checked
    policy = api.ok("GET", f"/v1/policies/{api.policy(**CHECK_IN)}")["data"]["attributes"]
    assert (
        policy["requireCheckIn"],
        policy["checkInInterval"],
        policy["checkInIntervalCount"],
    ) == (
        True,
        "day",
        1,
    )


def test_first_check_in_at_creation_and_overdue_validation(api: Api, clock: FakeClock) -> None:
    """A license of a check-in policy is checked in at creation; a day later validate says
    OVERDUE (Keygen's detail); a check-in makes it valid again and moves nextCheckIn."""
    lic = api.license(api.policy(**CHECK_IN))
    attrs = lic["attributes"]
    assert attrs["requireCheckIn"] is True
    assert attrs["lastCheckIn"] == "2026-01-01T00:00:00Z"
    assert attrs["nextCheckIn"] == "2026-01-02T00:00:00Z"
    validate = f"/v1/licenses/{lic['id']}/actions/validate"
    assert api.ok("POST", validate)["meta"]["code"] == "VALID"
    clock.advance(days=1, seconds=1)
    meta = api.ok("POST", validate)["meta"]
    assert (meta["valid"], meta["code"], meta["detail"]) == (
        False,
        "OVERDUE",
        "is overdue for check in",
    )
    answer = check_in(api, lic["id"])
    assert answer.status_code == 200
    assert "meta" not in answer.json()  # Keygen's answer: the license
    assert answer.json()["data"]["attributes"]["nextCheckIn"] == "2026-01-03T00:00:01Z"
    assert api.ok("POST", validate)["meta"]["code"] == "VALID"
    plain = api.license(api.policy())["attributes"]
    assert (plain["requireCheckIn"], plain["lastCheckIn"], plain["nextCheckIn"]) == (
        False,
        None,
        None,
    )


def test_check_in_refused_when_not_required_and_role_matrix(api: Api) -> None:
    """422 with Keygen's detail when the policy does not require check-ins; admin, the own
    product and the license itself may check in; another product's license is 404."""
    plain = api.license(api.policy())
    refused = check_in(api, plain["id"])
    assert refused.status_code == 422
    assert error_of(refused) == {
        "title": "Unprocessable entity",
        "detail": "cannot be checked in because the policy does not require it",
        "code": "CHECK_IN_NOT_REQUIRED",
    }
    product = api.product()
    lic = api.license(api.policy(product, **CHECK_IN), key="checkin-key-1")
    assert check_in(api, lic["id"], token=api.product_token(product)).status_code == 200
    assert check_in(api, lic["id"], token=api.license_token(lic["id"])).status_code == 200
    by_key = check_in(
        api, "checkin-key-1", token=None, headers={"Authorization": "License checkin-key-1"}
    )
    assert by_key.status_code == 200
    other = api.product_token(api.product("Other"))
    assert check_in(api, lic["id"], token=other).status_code == 404
    assert check_in(api, lic["id"], token=None).status_code == 401
    under_account = api.request(
        "POST", f"/v1/accounts/default/licenses/{lic['id']}/actions/check-in"
    )
    assert under_account.status_code == 200


def test_records_once_each_a_bad_one_never_blocks_the_good(db_api: Api) -> None:
    """Results come per record in request order: accepted, or rejected with Keygen's code and
    detail; a retried batch is all duplicates and changes nothing (SQLite and PostgreSQL)."""
    api = db_api
    lic = api.license(api.policy(maxUses=5, **CHECK_IN))
    batch = [record(2), record(4), record(3)]
    first = check_in(api, lic["id"], batch)
    assert first.status_code == 200, first.text
    results = first.json()["meta"]["usage"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["code"] == "USES_LIMIT_EXCEEDED"
    assert results[1]["detail"] == "usage exceeds maximum allowed for license (5)"
    assert first.json()["data"]["attributes"]["uses"] == 5
    history = api.ok("GET", f"/v1/licenses/{lic['id']}/usage")
    again = check_in(api, lic["id"], [batch[0], batch[2]])
    assert statuses(again) == ["duplicate", "duplicate"]
    assert [r["entryId"] for r in again.json()["meta"]["usage"]] == [
        results[0]["entryId"],
        results[2]["entryId"],
    ]
    assert again.json()["data"]["attributes"]["uses"] == 5
    after = api.ok("GET", f"/v1/licenses/{lic['id']}/usage")
    kinds = [e["attributes"]["kind"] for e in after["data"]]
    assert kinds.count("increment") == 2
    assert kinds.count("check_in") == 2
    assert after["meta"]["pages"]["count"] == history["meta"]["pages"]["count"] + 1
    keys = {e["attributes"]["idempotencyKey"] for e in after["data"]}
    assert {batch[0]["id"], batch[2]["id"]} <= keys


def test_clock_sanity_and_bad_values_have_their_own_codes(api: Api, clock: FakeClock) -> None:
    """Future beyond the tolerance, before the license, a bad id, amount or time, and an id
    reused for another record are each refused with their own code; the rest is applied."""
    clock.advance(days=1)
    lic = api.license(api.policy(**CHECK_IN))
    now = clock.now()
    taken = record(1, now)
    assert statuses(check_in(api, lic["id"], [taken])) == ["accepted"]
    batch = [
        record(1, now + timedelta(seconds=301)),
        record(1, now - timedelta(seconds=1)),
        {"id": "not-a-uuid", "increment": 1, "occurredAt": now.isoformat()},
        record(0, now),
        {"id": str(uuid.uuid4()), "increment": 1, "occurredAt": "2026-01-02T00:00:00"},
        {**taken, "increment": 2},
        record(1, now + timedelta(seconds=300)),
    ]
    results = check_in(api, lic["id"], batch).json()["meta"]["usage"]
    assert [r.get("code") for r in results] == [
        "USAGE_RECORD_IN_FUTURE",
        "USAGE_RECORD_BEFORE_LICENSE",
        "USAGE_RECORD_ID_INVALID",
        "USAGE_RECORD_INCREMENT_INVALID",
        "USAGE_RECORD_TIME_INVALID",
        "USAGE_RECORD_ID_CONFLICT",
        None,
    ]
    assert results[-1]["status"] == "accepted"
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 2


def test_batch_limit_and_malformed_records(api: Api) -> None:
    """More than 1000 records is 400 USAGE_BATCH_TOO_LARGE; a record of the wrong JSON shape
    fails the whole request (a client bug), and neither writes anything."""
    lic = api.license(api.policy(**CHECK_IN))
    large = check_in(api, lic["id"], [record() for _ in range(1001)])
    assert large.status_code == 400
    assert error_of(large)["code"] == "USAGE_BATCH_TOO_LARGE"
    typed = check_in(api, lic["id"], [{"id": "x", "increment": "1", "occurredAt": "now"}])
    assert typed.status_code == 400
    assert error_of(typed)["code"] == "TYPE_MISMATCH"
    history = api.ok("GET", f"/v1/licenses/{lic['id']}/usage")
    assert history["meta"]["pages"]["count"] == 0
    assert (
        statuses(check_in(api, lic["id"], [record() for _ in range(1000)])) == ["accepted"] * 1000
    )


def test_late_record_updates_its_closed_period_and_keeps_its_time(
    db_url: str, clock: FakeClock
) -> None:
    """A record dated in a period that closed is counted in that period's record (as late),
    its ledger entry keeps the original time, and it is forwarded with that time; a sink whose
    window it is past keeps it as a dead letter (late_window_passed)."""
    container = make_container(db_url, clock)
    try:
        with TestClient(build_app(container)) as client:
            api = Api(client)
            lic = api.license(api.policy(maxUses=10, usagePeriod=MONTHLY, **CHECK_IN))
            assert api.increment(lic["id"], 6).status_code == 200
            clock.set(datetime(2026, 2, 3, tzinfo=UTC))  # January has ended while offline
            january = datetime(2026, 1, 20, tzinfo=UTC)
            batch = [record(3, january), record(2, january), record(1, clock.now())]
            answer = check_in(api, lic["id"], batch)
            results = answer.json()["meta"]["usage"]
            assert [(r["status"], r["late"]) for r in results] == [
                ("accepted", True),
                ("rejected", False),
                ("accepted", False),
            ]
            assert results[0]["periodStart"] == "2026-01-01T00:00:00Z"
            assert results[2]["periodStart"] == "2026-02-01T00:00:00Z"
            assert answer.json()["data"]["attributes"]["uses"] == 1
        with container.engine.connect() as conn:
            period = conn.execute(select(tables.periods)).mappings().one()
            entry = (
                conn.execute(
                    select(tables.ledger).where(tables.ledger.c.idempotency_key == batch[0]["id"])
                )
                .mappings()
                .one()
            )
            rows = (
                conn.execute(select(tables.outbox).where(tables.outbox.c.entry_id == entry["id"]))
                .mappings()
                .all()
            )
        assert (period["uses_at_close"], period["increments"]) == (9, 9)
        assert (period["late_increments"], period["late_entries"]) == (3, 1)
        assert entry["occurred_at"] == january
        assert [(r["sink"], r["status"]) for r in rows] == [("file", "pending")]
        container.reconciler().run(Window.parse("2026-01"))
        report = reconciliation_report(container.uows, None, None, None, PageRequest(1, 10))
        assert [(f.sink, f.late, f.ledger_total) for f in report.items] == [("file", 1, 9)]
        # A sink that takes changes up to 7 days old keeps this 14-day-old record, reported.
        service = CheckInService(container.uows, clock, ["file"], {"file": timedelta(days=7)})
        old = RawUsageRecord(str(uuid.uuid4()), 1, january.isoformat())
        outcome = service.check_in(Principal(Role.ADMIN, "admin"), CheckIn(lic["id"], (old,)))
        with container.engine.connect() as conn:
            dead = (
                conn.execute(
                    select(tables.outbox).where(
                        tables.outbox.c.entry_id == outcome.results[0].entry_id
                    )
                )
                .mappings()
                .one()
            )
        assert (dead["status"], dead["reason"]) == ("dead", "late_window_passed")
    finally:
        container.dispose()


def test_cli_check_in_policy_and_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``policy create --check-in``, ``license check-in`` and ``usage history``, which shows the
    check-in; a license of a policy without check-ins is refused with Keygen's error."""
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result

    product = json.loads(run("product", "create", "--name", "App", "--json").stdout)["id"]
    policy = json.loads(
        run(
            "policy", "create", "--product", product, "--name", "P", "--check-in", "week", "--json"
        ).stdout
    )["id"]
    run("license", "create", "--policy", policy, "--key", "cli-check-in-1")
    checked = json.loads(run("license", "check-in", "cli-check-in-1", "--json").stdout)
    last = datetime.fromisoformat(checked["last_check_in"])
    assert datetime.fromisoformat(checked["next_check_in"]) == last + timedelta(weeks=1)
    history = json.loads(run("usage", "history", "cli-check-in-1", "--json").stdout)
    assert [e["kind"] for e in history] == ["check_in"]
    plain = json.loads(
        run("policy", "create", "--product", product, "--name", "Q", "--json").stdout
    )["id"]
    run("license", "create", "--policy", plain, "--key", "cli-check-in-2")
    refused = run("license", "check-in", "cli-check-in-2", code=1)
    assert "CHECK_IN_NOT_REQUIRED" in refused.output


def test_concurrent_check_ins_apply_each_record_once(db_url: str, clock: FakeClock) -> None:
    """Six check-ins racing with the same records on one license, and with one record id on
    two licenses: each record is accepted exactly once (SQLite and PostgreSQL)."""
    container = make_container(db_url, clock)
    try:
        with TestClient(build_app(container)) as client:
            api = Api(client)
            policy = api.policy(maxUses=1000, **CHECK_IN)
            first, second = api.license(policy)["id"], api.license(policy)["id"]
        service = container.checkins()
        admin = Principal(Role.ADMIN, "admin")
        at = clock.now().isoformat()
        shared = tuple(RawUsageRecord(str(uuid.uuid4()), 1, at) for _ in range(20))
        contested = RawUsageRecord(str(uuid.uuid4()), 5, at)
        outcomes: list[Any] = []

        def check_in_once(i: int) -> None:
            target = first if i < 6 else (first, second)[i % 2]
            usage = shared if i < 6 else (contested,)
            outcomes.append(service.check_in(admin, CheckIn(target, usage)))

        run_in_threads(8, check_in_once, deadline_s=60)
        shared_ids = {r.id for r in shared}
        accepted = [
            r.id
            for o in outcomes
            for r in o.results
            if r.status.value == "accepted" and r.id in shared_ids
        ]
        assert sorted(accepted) == sorted(shared_ids)
        contested_results = [r for o in outcomes for r in o.results if r.id == contested.id]
        assert sorted(r.status.value for r in contested_results) == ["accepted", "rejected"]
        assert {r.code for r in contested_results} == {None, "USAGE_RECORD_ID_CONFLICT"}
        with container.engine.connect() as conn:
            entries = conn.execute(
                select(tables.ledger.c.delta).where(tables.ledger.c.kind == "increment")
            ).all()
        assert sum(d for (d,) in entries) == 20 + 5
    finally:
        container.dispose()
