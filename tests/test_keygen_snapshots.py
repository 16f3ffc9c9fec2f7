"""The snapshot -> delta algorithm (``bridge.domain.keygen``), property-tested: whatever Keygen's
webhook delivery does, the forwarded total after a check is the real net usage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.domain.keygen import (
    DocumentInvalid,
    MemoryTimeline,
    Snapshot,
    Version,
    both_cases,
    camel,
    read_delivery,
    read_license,
    snake,
    total,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@dataclass
class History:
    """A valid Keygen history: what each change's webhook carries, what the bridge itself
    observes (its checks and its own resets, from the API), and the true net usage."""

    webhooks: list[tuple[Snapshot, bool]]  # (snapshot, may be lost)
    own: list[Snapshot]  # checks and own resets, observed through the API
    final: Snapshot  # the periodic check at the end
    net: int


ops = st.lists(
    st.one_of(
        st.tuples(st.just("inc"), st.integers(0, 9)),
        st.tuples(st.just("dec"), st.integers(1, 9)),
        st.tuples(st.just("close"), st.just(0)),
        st.tuples(st.just("foreign_reset"), st.just(0)),
    ),
    max_size=30,
)


def play(steps: list[tuple[str, int]], *, foreign: bool) -> History:
    uses, net, now = 0, 0, T0
    updated = now
    webhooks: list[tuple[Snapshot, bool]] = []
    own: list[Snapshot] = []
    for op, n in steps:
        now += MS
        created = now + 3 * MS  # the event is made a moment after the change
        if op == "inc":
            uses, net, updated = uses + n, net + n, now
            webhooks.append((Snapshot(Version.of(updated, created), uses), True))
        elif op == "dec" and uses >= n:
            uses, net, updated = uses - n, net - n, now
            webhooks.append((Snapshot(Version.of(updated, created), uses), True))
        elif op == "close":  # the bridge checks, then resets; Keygen echoes the reset
            own.append(Snapshot(Version.of(updated, None), uses))
            uses, updated = 0, now
            reset = Snapshot(Version.of(updated, None, reset=True), 0, reset=True)
            own.append(reset)
            webhooks.append((Snapshot(Version.of(updated, created, reset=True), 0, True), True))
        elif op == "foreign_reset" and foreign:
            uses, updated = 0, now
            snap = Snapshot(Version.of(updated, created, reset=True), 0, reset=True)
            webhooks.append((snap, False))  # a foreign reset's delivery must arrive
    return History(webhooks, own, Snapshot(Version.of(updated, None), uses), net)


@st.composite
def deliveries(draw: st.DrawFn, *, foreign: bool, lossy: bool) -> tuple[History, list[Snapshot]]:
    history = play(draw(ops), foreign=foreign)
    arrived: list[Snapshot] = []
    for snap, losable in history.webhooks:
        copies = draw(st.integers(0 if (lossy and losable) else 1, 3))  # lost, or duplicated
        arrived.extend([snap] * copies)
    arrived.extend(history.own)
    return history, draw(st.permutations(arrived))


def _replayed(arrived: list[Snapshot], history: History) -> int:
    """What the algorithm forwards for ``arrived`` then the final check (checked against the
    definition, ``total``)."""
    timeline = MemoryTimeline()
    forwarded = sum(timeline.record(s, 0) for s in [*arrived, history.final])
    assert forwarded == total(timeline.snapshots, 0)
    return forwarded


@settings(max_examples=150, deadline=None)
@given(deliveries(foreign=False, lossy=True))
def test_duplicated_reordered_lost_then_checked_gives_the_true_total(
    case: tuple[History, list[Snapshot]],
) -> None:
    """Any duplication, reordering and loss of the webhooks, with the bridge's own checks and
    resets, then one periodic check: the forwarded total is the true net usage."""
    history, arrived = case
    assert _replayed(arrived, history) == history.net


@settings(max_examples=150, deadline=None)
@given(deliveries(foreign=True, lossy=False))
def test_foreign_resets_duplicated_and_reordered_end_a_count(
    case: tuple[History, list[Snapshot]],
) -> None:
    """Resets made in Keygen by someone else end a count (never negative usage), in any order."""
    history, arrived = case
    assert _replayed(arrived, history) == history.net


@settings(max_examples=80, deadline=None)
@given(deliveries(foreign=False, lossy=False))
def test_in_order_and_complete_forwards_no_negative_artefact(
    case: tuple[History, list[Snapshot]],
) -> None:
    """Delivered in order (duplicates allowed), a reset forwards nothing: the end of a count."""
    history, arrived = case
    timeline = MemoryTimeline()
    ordered = sorted(arrived, key=lambda s: (s.version, not s.reset))
    deltas = [timeline.record(s, 0) for s in ordered]
    assert sum(deltas) == history.net
    assert all(d == 0 for d, s in zip(deltas, ordered, strict=True) if s.reset)


def test_older_snapshot_after_a_newer_one_adds_nothing() -> None:
    """An older snapshot arriving after a newer one is already counted by it."""
    timeline = MemoryTimeline()
    v1, v2 = Version.of(T0, T0 + MS), Version.of(T0 + MS, T0 + 2 * MS)
    assert timeline.record(Snapshot(v2, 7), 0) == 7
    assert timeline.record(Snapshot(v1, 5), 0) == 0


def test_a_late_reset_adds_back_what_its_segment_held() -> None:
    """5, then (after a reset that arrives last) 2: the reset splits the count, 5 + 2."""
    timeline = MemoryTimeline()
    v = [Version.of(T0 + k * MS, T0 + k * MS + MS) for k in range(3)]
    reset = Snapshot(Version.of(T0 + MS, None, reset=True), 0, reset=True)
    assert timeline.record(Snapshot(v[0], 5), 0) == 5
    assert timeline.record(Snapshot(v[2], 2), 0) == -3
    assert timeline.record(reset, 0) == 5
    assert total(timeline.snapshots, 0) == 7


def test_metadata_resolves_under_both_spellings() -> None:
    """Keygen renders camelCase what it stores snake_case: both spellings are kept."""
    both = both_cases({"lagoSubscriptionId": "sub-1", "m3ter_account_code": "acme", "HTTPUrl": 1})
    assert both["lago_subscription_id"] == both["lagoSubscriptionId"] == "sub-1"
    assert both["m3terAccountCode"] == both["m3ter_account_code"] == "acme"
    assert both["http_url"] == 1
    assert snake("lagoSubscriptionId") == "lago_subscription_id"
    assert camel("lago_subscription_id") == "lagoSubscriptionId"


def test_a_delivery_is_read_with_its_token_and_string_payload() -> None:
    """``attributes.payload`` is parsed a second time; the token comes from ``meta``."""
    payload = {"data": {"id": "lic-1", "type": "licenses"}}
    body = {
        "data": {
            "id": "evt-1",
            "type": "webhook-events",
            "attributes": {
                "event": "license.usage.incremented",
                "payload": json.dumps(payload),
                "created": "2026-11-01T00:00:00.123Z",
            },
            "meta": {"idempotencyToken": "tok-1"},
        }
    }
    delivery = read_delivery(body)
    assert (delivery.event_id, delivery.token, delivery.payload) == ("evt-1", "tok-1", payload)
    assert delivery.created == datetime(2026, 11, 1, 0, 0, 0, 123000, tzinfo=UTC)
    with pytest.raises(DocumentInvalid, match="not a license"):
        read_license(payload | {"data": {"type": "machines"}})
