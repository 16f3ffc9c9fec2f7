"""A license key is a credential: it never reaches the logs, not even inside a logged SQL error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bridge import logging as bridge_logging
from bridge.store import uow
from bridge.store.licenses import SqlLicenses
from bridge.testing import FakeClock
from tests.conftest import error_of
from tests.hostile import api_on, engine_of

KEY = "HOSTILE-KEY-5f3a9c"


@pytest.fixture(params=["console", "json"])
def configured_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """The service's own log configuration (debug level), uncached so it can be undone."""
    bridge_logging.configure("debug", request.param)
    structlog.configure(cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


def _key(key: str) -> dict[str, Any]:
    return {"data": {"type": "licenses", "attributes": {"key": key}}}


def _calls(api: Any, license_id: str) -> None:
    license_auth = {"Authorization": f"License {KEY}"}
    api.request("GET", f"/v1/licenses/{KEY}", headers=license_auth)
    api.request("POST", f"/v1/licenses/{KEY}/actions/increment-usage", headers=license_auth)
    api.request("POST", f"/v1/licenses/{KEY}/actions/validate", headers=license_auth)
    api.request("GET", f"/v1/licenses/{KEY}/usage")
    api.request("PATCH", f"/v1/licenses/{KEY}", json={"data": {"type": "licenses"}})
    api.request("GET", f"/v1/machines?license={KEY}")
    api.request(
        "POST", "/v1/licenses/actions/validate-key", token=None, json={"meta": {"key": KEY}}
    )
    api.request("GET", f"/v1/licenses/{KEY}x", headers={"Authorization": f"License {KEY}x"})


def test_a_license_key_never_appears_in_the_logs(
    db_url: str,
    clock: FakeClock,
    configured_logs: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key used as ``License <key>`` and as a path id is in no log line: not in normal
    answers, not in errors, not in a unique violation on the key, not in SQL errors logged as
    unexpected."""
    with api_on(db_url, clock) as api:
        policy = api.policy()
        lic = api.license(policy, key=KEY)
        other = api.license(policy)["id"]
        _calls(api, lic["id"])
        # A key that races past the check into the unique index (PostgreSQL's DETAIL quotes
        # it) is KEY_TAKEN, and nothing of the violation is logged.
        monkeypatch.setattr(SqlLicenses, "key_exists", lambda self, key: False)
        taken = api.request("PATCH", f"/v1/licenses/{other}", json=_key(KEY))
        assert (taken.status_code, error_of(taken)["code"]) == (422, "KEY_TAKEN")
        # A missing table, with the store's translation off: the driver's error, statement
        # and all, reaches the 500 handler's log.
        engine = engine_of(api)
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE licenses RENAME TO licenses_away")
        try:
            untranslated = lambda exc, dbapi: None  # noqa: E731
            monkeypatch.setattr(uow, "raise_translated", untranslated)
            _calls(api, lic["id"])
            response = api.request(
                "POST",
                f"/v1/licenses/{KEY}/actions/increment-usage",
                headers={"Authorization": f"License {KEY}"},
            )
            assert response.status_code == 500
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE licenses_away RENAME TO licenses")
    logged = capsys.readouterr()
    text = logged.err + logged.out
    assert "request_failed" in text
    assert "no such table" in text or "does not exist" in text  # the SQL error is there...
    assert KEY not in text  # ...but never the key
