"""Pure mapping of outbox items to m3ter measurements, and the split of a batch into requests.

A measurement (reference A.1): ``uid`` (the ledger entry id: m3ter ingests a uid once within
35 days), ``meter`` (a Meter code), ``account`` (an Account code), ``ts`` (ISO-8601 UTC) and
``measure`` ({data field code: number}).

A machine entry (activation, core change, deactivation) is a gauge: its measurement goes to the
policy's cores meter with ``{cores_measure_field: the license's core total}``, for a LATEST or MAX
aggregation; without a cores meter code for the policy it is not sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from bridge.domain.delivery import LicenseFacts, OutboxItem, forwarded
from bridge.domain.model import UsageEntry
from connectors._template import MappingMissing, render

if TYPE_CHECKING:
    from connectors.m3ter.settings import M3terSinkSettings

_ENVELOPE = len(b'{"measurements":[]}')


def accepts(entry: UsageEntry, license: LicenseFacts | None, settings: M3terSinkSettings) -> bool:
    """Whether the change is sent at all; one not accepted counts as delivered. A change
    without license facts is accepted (and then waits for its mapping), since its policy is
    unknown."""
    if not forwarded(entry):
        return False
    cores = entry.kind.counts_cores
    if entry.delta < 0 and not cores and not settings.forward_decrements:
        return False
    if license is None:
        return True
    if settings.policies is not None and license.policy_id not in settings.policies:
        return False
    return not cores or _cores_code(license.policy_id, settings) is not None


def account_code(item: OutboxItem, template: str) -> str:
    """The template with the license's facts filled in."""
    return render(template, item.license, item.entry.license_id)


def meter_code(item: OutboxItem, settings: M3terSinkSettings) -> str:
    return policy_meter_code(item.license.policy_id if item.license else None, settings)


def policy_meter_code(policy_id: str | None, settings: M3terSinkSettings) -> str:
    code = settings.meter_codes.get(policy_id or "") or settings.default_meter_code
    if not code:
        raise MappingMissing(f"no meter code for policy {policy_id}")
    return code


def _cores_code(policy_id: str, settings: M3terSinkSettings) -> str | None:
    return settings.cores_meter_codes.get(policy_id) or settings.default_cores_meter_code


def meter_and_measure(item: OutboxItem, settings: M3terSinkSettings) -> tuple[str, dict[str, int]]:
    """The meter and the measure: the delta of a usage change, or the core total after a
    machine change."""
    entry = item.entry
    if not entry.kind.counts_cores:
        return meter_code(item, settings), {settings.measure_field: entry.delta}
    policy_id = item.license.policy_id if item.license is not None else ""
    code = _cores_code(policy_id, settings)
    if not code:
        raise MappingMissing(f"no cores meter code for policy {policy_id}")
    return code, {settings.cores_measure_field: entry.uses_after}


def timestamp(item: OutboxItem) -> str:
    """ISO-8601 in UTC with milliseconds and a ``Z``, as m3ter's examples write it."""
    when = item.entry.occurred_at.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def measurement(item: OutboxItem, settings: M3terSinkSettings) -> dict[str, Any]:
    """The measurement of one item; ``MappingMissing`` if the license lacks a code."""
    meter, measure = meter_and_measure(item, settings)
    return {
        "uid": item.entry.id,
        "meter": meter,
        "account": account_code(item, settings.account_template),
        "ts": timestamp(item),
        "measure": measure,
    }


def encode(measurements: Sequence[dict[str, Any]]) -> bytes:
    """The request body, exactly as sent (so its size is the size m3ter sees)."""
    return json.dumps({"measurements": list(measurements)}, separators=(",", ":")).encode()


def encoded_size(measurement: dict[str, Any]) -> int:
    return len(json.dumps(measurement, separators=(",", ":")).encode())


def body_size(measurements: Sequence[dict[str, Any]]) -> int:
    """``len(encode(measurements))`` without building the body."""
    sizes = [encoded_size(m) for m in measurements]
    return _ENVELOPE + sum(sizes) + max(0, len(sizes) - 1)


def split(
    measurements: Sequence[dict[str, Any]], max_count: int, max_bytes: int
) -> list[list[dict[str, Any]]]:
    """Consecutive chunks of at most ``max_count`` measurements whose body is at most
    ``max_bytes``; a measurement too large on its own gets a chunk of its own."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = _ENVELOPE
    for m in measurements:
        extra = encoded_size(m) + (1 if current else 0)
        if current and (len(current) >= max_count or size + extra > max_bytes):
            chunks.append(current)
            current, size, extra = [], _ENVELOPE, extra - 1
        current.append(m)
        size += extra
    if current:
        chunks.append(current)
    return chunks
