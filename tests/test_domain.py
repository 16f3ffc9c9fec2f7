"""The pure domain rules, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.domain.access import LicenseAction, Principal, Role, authorize_license
from bridge.domain.errors import (
    AccessDenied,
    Field,
    IntegerTooLarge,
    NotFound,
    UsesInvalid,
    UsesLimitExceeded,
)
from bridge.domain.limits import next_uses
from bridge.domain.model import License, Terms
from bridge.domain.validation import ValidationScope, validate_license

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def make_license(policy: Terms | None = None, **changes: object) -> License:
    """A license under ``policy``'s terms (none by default), with ``changes``."""
    base = License(
        id="lic-1",
        key="key-1",
        name=None,
        policy_id="pol-1",
        product_id="prod-1",
        uses=0,
        max_uses_override=None,
        protected=False,
        suspended=False,
        expiry=None,
        metadata={},
        created=NOW,
        updated=NOW,
        terms=Terms(),
    )
    return base.replace(**changes).under(policy or Terms())


@pytest.mark.parametrize(
    ("uses", "delta", "max_uses", "expected"),
    [
        (0, 1, None, 1),
        (4, 1, 5, 5),
        (5, 0, 5, 5),
        (12, 0, 10, 12),  # +0 on an over-limit license is not checked
        (11, -1, 10, 10),
        (3, -3, 5, 0),
        (0, 2_147_483_647, None, 2_147_483_647),
    ],
)
def test_next_uses_accepts(uses: int, delta: int, max_uses: int | None, expected: int) -> None:
    """Accepted changes give the new count."""
    assert next_uses(uses, delta, max_uses, amount=Field.INCREMENT) == expected


@pytest.mark.parametrize(
    ("uses", "delta", "max_uses", "error"),
    [
        (5, 1, 5, UsesLimitExceeded),
        (0, 1, 0, UsesLimitExceeded),
        (12, -1, 10, UsesLimitExceeded),  # still above the max after the change
        (0, -1, 5, UsesInvalid),
        (0, 2**70, 5, UsesLimitExceeded),  # limit first, as Keygen's validations run first
        (1, 2_147_483_647, None, IntegerTooLarge),
        (0, -(2**70), None, UsesInvalid),
    ],
)
def test_next_uses_rejects(uses: int, delta: int, max_uses: int | None, error: type) -> None:
    """Rejections follow Keygen's order: limit, then negative, then too large."""
    with pytest.raises(error):
        next_uses(uses, delta, max_uses, amount=Field.INCREMENT)


def test_limit_error_names_the_maximum_and_field() -> None:
    """The limit error carries Keygen's detail and names the field it is about."""
    with pytest.raises(UsesLimitExceeded) as caught:
        next_uses(5, 1, 5, amount=Field.INCREMENT)
    assert caught.value.detail == "usage exceeds maximum allowed for license (5)"
    assert caught.value.field is Field.USES
    with pytest.raises(IntegerTooLarge) as too_large:
        next_uses(1, 2_147_483_647, None, amount=Field.DECREMENT)
    assert too_large.value.field is Field.DECREMENT


@pytest.mark.parametrize(
    ("override", "policy", "expected"),
    [(None, 10, 10), (500, 100, 500), (0, 100, 100), (None, None, None), (7, None, 7)],
)
def test_effective_max_uses(override: int | None, policy: int | None, expected: int | None) -> None:
    """Override unless null or 0 (Keygen's quirk), else the policy's value."""
    assert make_license(Terms(max_uses=policy), max_uses_override=override).max_uses == expected


def test_first_use_expiry_only_when_unset() -> None:
    """A FROM_FIRST_USE duration sets the expiry only on a license without one."""
    lic = make_license(Terms(first_use_duration=3600))
    assert lic.expiry_on_first_use(NOW) == NOW + timedelta(hours=1)
    assert lic.replace(expiry=NOW).expiry_on_first_use(NOW) is None
    assert make_license().expiry_on_first_use(NOW) is None


def test_validation_order() -> None:
    """Suspended beats expired beats scope; usage never matters."""
    expired = NOW - timedelta(days=1)
    both = make_license(suspended=True, expiry=expired)
    assert validate_license(both, NOW, ValidationScope()).code == "SUSPENDED"
    assert validate_license(make_license(expiry=expired), NOW, ValidationScope()).code == "EXPIRED"
    scoped = validate_license(make_license(), NOW, ValidationScope(product="other"))
    assert (scoped.valid, scoped.code) == (False, "PRODUCT_SCOPE_MISMATCH")
    busy = make_license(Terms(max_uses=10), uses=10)
    assert validate_license(busy, NOW, ValidationScope()).valid is True


@pytest.mark.parametrize(
    ("principal", "action", "outcome"),
    [
        (Principal(Role.ADMIN, "admin"), LicenseAction.RESET, None),
        (Principal(Role.PRODUCT, "prod-1"), LicenseAction.DECREMENT, None),
        (Principal(Role.PRODUCT, "prod-2"), LicenseAction.INCREMENT, NotFound),
        (Principal(Role.LICENSE, "lic-1"), LicenseAction.INCREMENT, None),
        (Principal(Role.LICENSE, "lic-1"), LicenseAction.DECREMENT, AccessDenied),
        (Principal(Role.LICENSE, "lic-1"), LicenseAction.RESET, AccessDenied),
        (Principal(Role.LICENSE, "lic-2"), LicenseAction.INCREMENT, NotFound),
    ],
)
def test_role_matrix(principal: Principal, action: LicenseAction, outcome: type | None) -> None:
    """Keygen's matrix: out of scope is 404, a forbidden action in scope is 403."""
    lic = make_license()
    if outcome is None:
        authorize_license(principal, lic, action, "lic-1")
    else:
        with pytest.raises(outcome):
            authorize_license(principal, lic, action, "lic-1")


def test_snapshot_round_trip() -> None:
    """A license snapshot (stored with an idempotency key) restores the same value."""
    lic = make_license(expiry=NOW, metadata={"a": [1, 2]}, uses=3)
    assert License.from_snapshot(lic.to_snapshot()) == lic


def test_snapshot_stored_before_terms_restores() -> None:
    """An answer stored when a license carried its policy's values (before ``terms``) still
    replays, with the same effective terms."""
    lic = make_license(Terms(max_uses=10, first_use_duration=60), max_cores_override=4)
    old = lic.to_snapshot()
    del old["terms"]
    old |= {
        "policy_max_uses": 10,
        "policy_first_use_duration": 60,
        "policy_usage_period": None,
        "policy_max_machines": None,
        "policy_max_cores": 2,
    }
    assert License.from_snapshot(old) == lic
