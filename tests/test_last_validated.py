"""Keygen's ``lastValidated``: every validation of a license sets it (Keygen
``LicenseValidationService#touch!``), valid or not, by id or by key; nothing else writes it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from bridge.testing import FakeClock
from tests.conftest import Api
from tests.hostile import api_on, engine_of


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value is not None else None


def _last_validated(api: Api, license_id: str) -> datetime | None:
    return _at(api.ok("GET", f"/v1/licenses/{license_id}")["data"]["attributes"]["lastValidated"])


def _validate_key(api: Api, key: str, **scope: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"key": key, **({"scope": scope} if scope else {})}
    return api.ok("POST", "/v1/licenses/actions/validate-key", json={"meta": meta})


def test_each_validation_sets_last_validated(db_url: str, clock: FakeClock) -> None:
    """Null until validated; then the time of the latest validation, in its own answer and in
    later reads, whether it was valid or not; an unknown key and other writes leave it."""
    with api_on(db_url, clock) as api:
        lic = api.license()
        key = lic["attributes"]["key"]
        assert lic["attributes"]["lastValidated"] is None

        clock.advance(minutes=1)
        first = clock.now()
        doc = api.ok("POST", f"/v1/licenses/{lic['id']}/actions/validate")
        assert (doc["meta"]["code"], _at(doc["data"]["attributes"]["lastValidated"])) == (
            "VALID",
            first,
        )
        assert _last_validated(api, lic["id"]) == first

        clock.advance(minutes=1)
        failed = clock.now()
        doc = _validate_key(api, key, product="another-product")
        assert (doc["meta"]["valid"], doc["meta"]["code"]) == (False, "PRODUCT_SCOPE_MISMATCH")
        assert _at(doc["data"]["attributes"]["lastValidated"]) == failed
        assert _last_validated(api, lic["id"]) == failed

        clock.advance(minutes=1)
        assert _validate_key(api, "NO-SUCH-KEY")["data"] is None
        body = {"data": {"type": "licenses", "attributes": {"name": "Renamed"}}}
        api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=body)
        api.increment(lic["id"])
        assert _last_validated(api, lic["id"]) == failed


def test_a_validation_does_not_wait_for_a_write_holding_the_license(
    pg_url: str, clock: FakeClock
) -> None:
    """PostgreSQL: while another transaction holds the license row, a validation answers at
    once (its document shows its own time) and leaves the stored lastValidated to the next
    one, as Keygen's touch skips a locked license."""
    with api_on(pg_url, clock) as api:
        lic = api.license()["id"]
        with engine_of(api).connect() as holder:
            holder.execute(text("SELECT id FROM licenses WHERE id = :id FOR UPDATE"), {"id": lic})
            clock.advance(minutes=1)
            doc = api.ok("POST", f"/v1/licenses/{lic}/actions/validate")
            assert _at(doc["data"]["attributes"]["lastValidated"]) == clock.now()
            holder.rollback()
        assert _last_validated(api, lic) is None
        api.ok("POST", f"/v1/licenses/{lic}/actions/validate")
        assert _last_validated(api, lic) == clock.now()
