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
- A machine entry (activation, core change, deactivation) is a gauge: ``code`` is the policy's
  cores metric and ``properties`` is ``{cores_property_field: the license's core total}``, so a
  ``max`` metric bills the peak and a ``latest`` metric the current cores of the period. Without
  a cores metric code for the policy, machine entries are not sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.domain.delivery import LicenseFacts, OutboxItem, forwarded
from bridge.domain.model import UsageEntry
from connectors._template import MappingMissing, render
from connectors.lago.settings import LagoSinkSettings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def accepts(entry: UsageEntry, license: LicenseFacts | None, settings: LagoSinkSettings) -> bool:
    """False for changes the sink skips (counted as delivered): one not forwarded at all, a
    policy outside ``policies``, a decrement when ``forward_decrements`` is off, or a machine
    entry of a policy without a cores metric. A change without license facts is accepted (and
    then waits for its mapping), since its policy is unknown."""
    if not forwarded(entry):
        return False
    policies = settings.policies
    if policies is not None and license is not None and license.policy_id not in policies:
        return False
    if entry.kind.counts_cores:
        return license is None or _cores_code(license.policy_id, settings) is not None
    return entry.delta >= 0 or settings.forward_decrements


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


def _cores_code(policy_id: str, settings: LagoSinkSettings) -> str | None:
    return settings.cores_metric_codes.get(policy_id, settings.default_cores_metric_code)


def code_and_properties(
    item: OutboxItem, policy_id: str, settings: LagoSinkSettings
) -> tuple[str, dict[str, int]]:
    """The metric and the properties: the delta of a usage change, or the core total after a
    machine change."""
    if not item.entry.kind.counts_cores:
        return metric_code(policy_id, settings), {settings.property_field: item.entry.delta}
    code = _cores_code(policy_id, settings)
    if not code:
        raise MappingMissing(f"no Lago cores metric code for policy {policy_id}")
    return code, {settings.cores_property_field: item.entry.uses_after}


def event(item: OutboxItem, settings: LagoSinkSettings) -> dict[str, Any]:
    """The Lago event for one item; ``MappingMissing`` if the settings or the license lack
    what it needs."""
    license = item.license
    if license is None:
        raise MappingMissing(f"license {item.entry.license_id} is gone; no subscription to bill")
    code, properties = code_and_properties(item, license.policy_id, settings)
    return {
        "transaction_id": item.entry.id,
        "external_subscription_id": render(
            settings.subscription_template, license, item.entry.license_id
        ),
        "code": code,
        "timestamp": timestamp(item.entry.occurred_at),
        "properties": properties,
    }
