"""Outbox items as Lago events: pure functions, no I/O.

One ledger entry is one Lago event (spec ``EventInputObject``):

- ``transaction_id`` is the ledger entry id, never regenerated: it is Lago's dedupe key, so a
  redelivery is counted once.
- ``timestamp`` is ``entry.occurred_at`` as Unix seconds in the decimal-string form with
  milliseconds (``"1767225600.123"``). The spec types it ``oneOf: [integer, string]`` and says
  milliseconds are given "by appending decimals"; a JSON float would fail the spec, and whole
  integer seconds would move an event up to a second earlier (before a subscription's
  ``started_at``, say). Lago stores milliseconds, so that is the precision sent. It is derived
  from the stored entry only, so a retry sends the same value (on Lago's ClickHouse store the
  dedupe key is ``transaction_id`` plus ``timestamp``).
- ``external_subscription_id`` comes from ``subscription_template``; ``code`` from the policy's
  billable metric; ``properties`` is ``{property_field: delta}`` (an integer, negative for a
  decrement).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.domain.delivery import OutboxItem
from connectors._template import MappingMissing, render
from connectors.lago.settings import LagoSinkSettings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def should_send(item: OutboxItem, settings: LagoSinkSettings) -> bool:
    """False for items the sink skips (counted as delivered): a policy outside ``policies``, or
    a decrement when ``forward_decrements`` is off. An item without license facts is sent (and
    then fails its mapping), since its policy is unknown."""
    if item.entry.delta < 0 and not settings.forward_decrements:
        return False
    if settings.policies is not None and item.license is not None:
        return item.license.policy_id in settings.policies
    return True


def timestamp(occurred_at: datetime) -> str:
    """Unix seconds with milliseconds, as a decimal string (floored, exact integer arithmetic)."""
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    delta = occurred_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, millis = divmod(micros // 1000, 1000)
    return f"{seconds}.{millis:03d}"


def metric_code(policy_id: str, settings: LagoSinkSettings) -> str:
    code = settings.metric_codes.get(policy_id, settings.default_metric_code)
    if not code:
        raise MappingMissing(f"no Lago metric code for policy {policy_id}")
    return code


def event(item: OutboxItem, settings: LagoSinkSettings) -> dict[str, Any]:
    """The Lago event for one item; ``MappingMissing`` if the settings or the license lack
    what it needs."""
    license = item.license
    if license is None:
        raise MappingMissing(f"license {item.entry.license_id} is gone; no subscription to bill")
    return {
        "transaction_id": item.entry.id,
        "external_subscription_id": render(
            settings.subscription_template, license, item.entry.license_id
        ),
        "code": metric_code(license.policy_id, settings),
        "timestamp": timestamp(item.entry.occurred_at),
        "properties": {settings.property_field: item.entry.delta},
    }
