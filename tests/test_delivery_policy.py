"""The one delivery policy: ``decide``, the reasons, the pause, and the error markers."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest

from bridge.domain import errors
from bridge.domain.delivery import (
    DELIVERED,
    Dead,
    OutboxItem,
    PermanentDeliveryError,
    Reason,
    Retry,
    RetryPolicy,
    TransientDeliveryError,
    decide,
    forwarded,
    mapping_missing,
    pause_until,
)
from bridge.domain.errors import Terminal, Transient
from bridge.domain.model import UsageKind
from bridge.domain.ports import PlatformUnavailable, StoreConflict
from bridge.service.usage import RaceLost
from bridge.settings import ConfigFileMissing
from connectors._template import MappingMissing
from connectors.m3ter.auth import TokenRequestFailed
from tests.builders import outbox_item

NOW = datetime(2026, 1, 10, tzinfo=UTC)
POLICY = RetryPolicy(base_s=1, cap_s=300, horizon_s=3600)


def item(
    age_s: float = 60, attempts: int = 1, delta: int = 1, kind: UsageKind | None = None
) -> OutboxItem:
    found = outbox_item(
        item_id=1,
        entry_id="e-1",
        sink="lago",
        delta=delta,
        occurred_at=NOW - timedelta(seconds=age_s),
        license_id="lic-1",
        policy="pol",
        metadata={},
        kind=kind,
    )
    return dataclasses.replace(found, attempts=attempts)


def test_no_error_is_delivered() -> None:
    """An item the sink did not fail is delivered."""
    assert decide(None, item(), NOW, POLICY) == DELIVERED


def test_a_terminal_error_is_dead_for_its_reason() -> None:
    """A permanent error is dead at once, under the reason it carries."""
    outcome = decide(
        PermanentDeliveryError("422 bad", reason=Reason.TOO_LARGE), item(), NOW, POLICY
    )
    assert outcome == Dead(Reason.TOO_LARGE, "PermanentDeliveryError: 422 bad")
    rejected = decide(PermanentDeliveryError("400"), item(), NOW, POLICY)
    assert rejected == Dead(Reason.REJECTED, "PermanentDeliveryError: 400")


def test_a_transient_error_is_retried_no_sooner_than_the_platform_asked() -> None:
    """Backoff with full jitter under the cap, but never before Retry-After."""
    error = TransientDeliveryError("429", reason=Reason.RATE_LIMITED, retry_after=120)
    outcome = decide(error, item(attempts=3), NOW, POLICY, random.Random(1))
    assert isinstance(outcome, Retry)
    assert (outcome.reason, outcome.error) == (Reason.RATE_LIMITED, "429")
    assert outcome.at == NOW + timedelta(seconds=120)  # backoff of attempt 3 is at most 4 s
    quick = decide(TransientDeliveryError("503"), item(attempts=3), NOW, POLICY, random.Random(1))
    assert isinstance(quick, Retry)
    assert NOW <= quick.at <= NOW + timedelta(seconds=4)


def test_past_the_horizon_a_transient_error_is_dead() -> None:
    """An item older than the retry horizon is dead as horizon_passed, with the last error."""
    outcome = decide(mapping_missing("no code"), item(age_s=3601), NOW, POLICY)
    assert isinstance(outcome, Dead)
    assert outcome.reason == Reason.HORIZON_PASSED
    assert outcome.error == "retry horizon passed; last error: MAPPING_MISSING: no code"
    kept = decide(mapping_missing("no code"), item(age_s=3599), NOW, POLICY)
    assert isinstance(kept, Retry)
    assert kept.reason == Reason.MAPPING_MISSING


def test_an_unexpected_exception_is_a_sink_bug_and_retried() -> None:
    """An unmarked exception is retried as sink_error, so no item is lost to a bug."""
    outcome = decide(KeyError("oops"), item(), NOW, POLICY)
    assert isinstance(outcome, Retry)
    assert (outcome.reason, outcome.error) == (Reason.SINK_ERROR, "KeyError: 'oops'")


def test_the_pause_is_the_longest_wait_asked() -> None:
    """Only transient errors with a Retry-After pause a sink; the longest one wins."""
    asked = [
        TransientDeliveryError("429", retry_after=5),
        TransientDeliveryError("503", retry_after=30),
        TransientDeliveryError("timeout"),
        PermanentDeliveryError("400"),
    ]
    assert pause_until(asked, NOW) == NOW + timedelta(seconds=30)
    assert pause_until(asked[2:], NOW) is None


def test_resets_and_zero_changes_are_not_forwarded() -> None:
    """The one forwarding rule the usage and machine services share."""
    assert forwarded(item().entry)
    assert forwarded(item(delta=-1).entry)
    assert not forwarded(item(delta=0).entry)
    assert not forwarded(item(delta=-3, kind=UsageKind.RESET).entry)
    assert forwarded(item(delta=-2, kind=UsageKind.DEACTIVATE).entry)


@pytest.mark.parametrize(
    "cls",
    [
        *errors.all_error_classes()[1:],  # BridgeError itself is the 500 of a bug: neither
        TransientDeliveryError,
        PermanentDeliveryError,
        PlatformUnavailable,
        StoreConflict,
        RaceLost,
        MappingMissing,
        TokenRequestFailed,
        ConfigFileMissing,
    ],
)
def test_every_internal_error_is_transient_or_terminal(cls: type[BaseException]) -> None:
    """One isinstance check decides a retry: each error type carries exactly one marker."""
    assert issubclass(cls, Transient) != issubclass(cls, Terminal), cls.__name__
