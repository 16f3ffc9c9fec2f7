"""Keygen's usage snapshots turned into exact deltas, and Keygen's license documents read. Pure.

Keygen's webhooks carry *snapshots*: the license's ``uses`` after a change, never the change.
Deliveries may be duplicated, reordered, delayed for days or lost. The forwarded total of a
license is therefore defined as a function of the *set* of snapshots known, never of the order
they arrived in:

- order: a snapshot's ``Version`` is the license's ``updated`` (Keygen's time of the change,
  milliseconds), then the webhook event's ``created`` as a tie-break; a snapshot read from
  Keygen's API (the periodic check, the reset's own answer) sorts after every webhook of the
  same ``updated`` (it is the state once every change of that instant was made);
- segments: a reset (``license.usage.reset``, or the bridge's own ``reset-usage``) ends a count.
  Resets are keyed by ``updated`` alone (two resets of one instant are one). A snapshot belongs
  to the segment of the latest reset at or before it (a change in the same millisecond as a
  reset is taken as after it);
- total: each segment contributes its latest snapshot's ``uses`` minus its base (0 after a
  reset; the first segment's base is the baseline taken when the license was first mirrored).

``total(snapshots, baseline)`` is that definition; ``change(timeline, snapshot, baseline)`` is
the same thing computed incrementally (what adding one snapshot changes the total by) from the
few neighbours a store can read by index. The sum of the changes is the total whatever the
arrival order, so a duplicate adds 0, an older snapshot after a newer one adds 0, and a late
reset splits its segment and adds back what the segment had before it. A lost snapshot is
settled by the next one of its segment or by a check, which reads the license's current
state: after a check, the total equals Keygen's real net usage of every segment whose end is
known (the bridge checks a license right before it resets it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

# Sorts after every timestamp: an API read wins a tie with the webhooks of its instant.
_API_TIE = "~"


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """A snapshot's place in Keygen's history; ``key`` sorts as the versions do."""

    key: str

    @classmethod
    def of(cls, updated: datetime, created: datetime | None, *, reset: bool = False) -> Version:
        """A webhook's (``created``: its event's time) or an API read's (``created`` None)."""
        if reset:  # before every snapshot of its instant
            return cls(f"{_stamp(updated)}|")
        return cls(f"{_stamp(updated)}|{_stamp(created) if created else _API_TIE}")

    @property
    def updated(self) -> datetime:
        return datetime.fromisoformat(self.key.split("|", 1)[0]).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: Version
    uses: int
    reset: bool = False  # a reset: the end of a count


class Timeline(Protocol):
    """What a store answers about one license's known snapshots (indexed reads)."""

    def resets_around(self, version: Version) -> tuple[Version | None, Version | None]:
        """The latest reset at or before ``version`` and the first one after it."""
        ...

    def last_between(self, low: Version | None, high: Version | None) -> Snapshot | None:
        """The latest non-reset snapshot with ``low <= version < high`` (open ends: None); of
        equal versions, the last recorded."""
        ...

    def has_reset(self, version: Version) -> bool: ...


def change(timeline: Timeline, snap: Snapshot, baseline: int) -> int:
    """What recording ``snap`` changes the license's total by (before it is recorded)."""
    if not snap.reset:
        low, high = timeline.resets_around(snap.version)
        last = timeline.last_between(low, high)
        if last is not None and last.version > snap.version:
            return 0  # a newer snapshot of the segment already counts this one
        base = 0 if low is not None else baseline
        return snap.uses - (last.uses if last is not None else base)
    if timeline.has_reset(snap.version):
        return 0
    low, high = timeline.resets_around(snap.version)
    base = 0 if low is not None else baseline
    before = timeline.last_between(low, snap.version)
    after = timeline.last_between(snap.version, high)
    if after is None:
        return 0  # the segment ends at this reset anyway
    # The segment contributed (after - base); split, it contributes (before - base) + after.
    return before.uses if before is not None else base


def total(snapshots: Iterable[Snapshot], baseline: int) -> int:
    """The definition: per segment, its latest snapshot minus its base."""
    ordered = sorted(snapshots, key=lambda s: (s.version, not s.reset))
    result, base, last = 0, baseline, None
    for snap in ordered:
        if snap.reset:
            if last is not None:
                result += last - base
            base, last = 0, None
        else:
            last = snap.uses
    if last is not None:
        result += last - base
    return result


@dataclass
class MemoryTimeline:
    """A ``Timeline`` in memory (tests, and the reference for the store's queries)."""

    snapshots: list[Snapshot] = field(default_factory=list)

    def resets_around(self, version: Version) -> tuple[Version | None, Version | None]:
        resets = sorted(s.version for s in self.snapshots if s.reset)
        low = max((v for v in resets if v <= version), default=None)
        high = min((v for v in resets if v > version), default=None)
        return low, high

    def last_between(self, low: Version | None, high: Version | None) -> Snapshot | None:
        found: Snapshot | None = None
        for snap in self.snapshots:  # in recording order: of equal versions the last wins
            if snap.reset or (low is not None and snap.version < low):
                continue
            if high is not None and snap.version >= high:
                continue
            if found is None or snap.version >= found.version:
                found = snap
        return found

    def has_reset(self, version: Version) -> bool:
        return any(s.reset and s.version == version for s in self.snapshots)

    def record(self, snap: Snapshot, baseline: int) -> int:
        delta = change(self, snap, baseline)
        self.snapshots.append(snap)
        return delta


# Keygen's documents -------------------------------------------------------------------------


class KeygenEvent(StrEnum):
    """The webhook event types the relay acts on (subscribe the endpoint to these)."""

    INCREMENTED = "license.usage.incremented"
    DECREMENTED = "license.usage.decremented"
    RESET = "license.usage.reset"
    CREATED = "license.created"
    UPDATED = "license.updated"
    DELETED = "license.deleted"
    POLICY_UPDATED = "license.policy.updated"


USAGE_EVENTS = frozenset({KeygenEvent.INCREMENTED, KeygenEvent.DECREMENTED, KeygenEvent.RESET})


class DocumentInvalid(ValueError):
    """A Keygen document lacks what the relay needs."""


@dataclass(frozen=True, slots=True)
class KeygenLicense:
    """A Keygen license as its documents render it (camelCase metadata keys)."""

    id: str
    key: str
    name: str | None
    policy_id: str
    product_id: str | None
    uses: int
    max_uses: int | None
    metadata: dict[str, Any]
    created: datetime
    updated: datetime


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise DocumentInvalid(f"the license's {what} is missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DocumentInvalid(f"the license's {what} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _related(relationships: Mapping[str, Any], name: str) -> str | None:
    data = (relationships.get(name) or {}).get("data") if isinstance(relationships, dict) else None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) and found else None


def read_license(document: Mapping[str, Any]) -> KeygenLicense:
    """A ``{"data": {...licenses...}}`` document (a webhook's payload or an API answer)."""
    data = document.get("data")
    if not isinstance(data, dict) or data.get("type") != "licenses":
        raise DocumentInvalid("not a license document")
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise DocumentInvalid("the license has no attributes")
    license_id, key = data.get("id"), attributes.get("key")
    if not isinstance(license_id, str) or not license_id or len(license_id) > 36:
        raise DocumentInvalid("the license id is missing or longer than 36")
    if not isinstance(key, str) or not key or len(key) > 255:
        raise DocumentInvalid("the license key is missing or longer than 255")
    uses = attributes.get("uses") or 0  # Keygen's NULL uses counts as 0
    max_uses = attributes.get("maxUses")
    if not isinstance(uses, int) or isinstance(uses, bool):
        raise DocumentInvalid("the license's uses is not an integer")
    if max_uses is not None and (not isinstance(max_uses, int) or isinstance(max_uses, bool)):
        raise DocumentInvalid("the license's maxUses is not an integer")
    relationships = data.get("relationships") or {}
    policy_id = _related(relationships, "policy")
    if policy_id is None:
        raise DocumentInvalid("the license names no policy")
    metadata = attributes.get("metadata") or {}
    name = attributes.get("name")
    return KeygenLicense(
        id=license_id,
        key=key,
        name=name[:255] if isinstance(name, str) else None,
        policy_id=policy_id[:36],
        product_id=(_related(relationships, "product") or "")[:36] or None,
        uses=uses,
        max_uses=max_uses,
        metadata=metadata if isinstance(metadata, dict) else {},
        created=_time(attributes.get("created"), "created"),
        updated=_time(attributes.get("updated"), "updated"),
    )


@dataclass(frozen=True, slots=True)
class KeygenDelivery:
    """A ``webhook-events`` delivery, read."""

    event_id: str
    token: str  # meta.idempotencyToken: Keygen's manual retry makes a new id, same token
    event: str
    created: datetime | None
    payload: dict[str, Any]


def read_delivery(body: Mapping[str, Any]) -> KeygenDelivery:
    data = body.get("data")
    if not isinstance(data, dict) or data.get("type") != "webhook-events":
        raise DocumentInvalid("not a webhook-events document")
    attributes = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}
    assert isinstance(attributes, dict)
    event_id, event = data.get("id"), attributes.get("event")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    token = meta.get("idempotencyToken") or event_id
    if not isinstance(event_id, str) or not event_id:
        raise DocumentInvalid("the event has no id")
    if not isinstance(token, str) or not token:
        raise DocumentInvalid("the event has no idempotency token")
    if not isinstance(event, str) or not event:
        raise DocumentInvalid("the event has no type")
    raw = attributes.get("payload")
    payload: Any = {}
    if isinstance(raw, str) and raw:
        try:
            payload = json.loads(raw)  # the payload is a JSON string inside the JSON
        except ValueError:
            raise DocumentInvalid("the event's payload is not JSON") from None
    created = attributes.get("created")
    return KeygenDelivery(
        event_id=event_id,
        token=token,
        event=event,
        created=_time(created, "event created") if isinstance(created, str) else None,
        payload=payload if isinstance(payload, dict) else {},
    )


def payload_license_id(payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data")
    if isinstance(data, dict) and data.get("type") == "licenses":
        found = data.get("id")
        return found if isinstance(found, str) else None
    return None


# Metadata: Keygen stores keys snake_case and renders them camelCase ------------------------

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake(key: str) -> str:
    """Rails' ``underscore`` of a key: ``lagoSubscriptionId`` -> ``lago_subscription_id``."""
    return _WORD_BOUNDARY.sub("_", key).replace("-", "_").lower()


def camel(key: str) -> str:
    """Rails' lower ``camelize``: ``lago_subscription_id`` -> ``lagoSubscriptionId``."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def both_cases(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Each top-level key under its snake_case and its camelCase spelling (the value once per
    spelling), so ``{license.metadata.lago_subscription_id}`` and
    ``{license.metadata.lagoSubscriptionId}`` both resolve."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        out[key] = value
        out.setdefault(snake(key), value)
        out.setdefault(camel(snake(key)), value)
    return out


# The relay's records ------------------------------------------------------------------------


class ResetStatus(StrEnum):
    PENDING = "pending"  # to be made (again, after a 409, a 429 or an outage)
    DONE = "done"  # Keygen answered with the license at 0
    SUPERSEDED = "superseded"  # a later period's reset covers it (the license was idle)
    GONE = "gone"  # Keygen no longer has the license


class SnapshotSource(StrEnum):
    WEBHOOK = "webhook"
    CHECK = "check"  # read from Keygen's API (the periodic check, keygen sync)
    RESET = "reset"  # the answer to the bridge's own reset-usage


@dataclass(frozen=True, slots=True)
class Mirror:
    """What the relay keeps of a mirrored license (its local license row has the same id)."""

    license_id: str
    baseline: int  # Keygen's uses when first seen: usage before it is not the bridge's
    max_uses: int | None  # Keygen's limit (the bridge never enforces it)
    keygen_uses: int  # the latest value known, at ``keygen_updated``
    keygen_updated: datetime
    forwarded: int  # everything forwarded for it since it was mirrored
    corrections: int  # deltas forwarded by a check (a delivery was lost)
    corrected: int  # their sum
    mirrored_at: datetime
    last_delivery_at: datetime | None
    last_check_at: datetime | None
    next_check_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeygenReset:
    """The Keygen reset of one closed usage period."""

    id: int
    license_id: str
    period_start: datetime
    period_end: datetime
    status: ResetStatus
    attempts: int
    next_attempt_at: datetime
    uses_before: int | None  # what the check right before it read
    reset_at: datetime | None  # Keygen's time of the reset (the license's ``updated``)
    last_error: str | None
    created: datetime
    done_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeygenStatus:
    mirrored: int
    deleted: int
    last_delivery_at: datetime | None
    last_check_at: datetime | None
    corrections: int
    corrected: int
    forwarded: int
    resets: dict[str, int]  # by status
    checks_due: int


class KeygenApi(Protocol):
    """Keygen's API as the relay uses it (``connectors.keygen.KeygenClient``)."""

    def get_license(self, license_id: str) -> dict[str, Any] | None:
        """The license document; None when Keygen has no such license."""
        ...

    def reset_usage(self, license_id: str) -> dict[str, Any]:
        """Reset the license's uses to 0; the license document after the reset."""
        ...


class KeygenRepository(Protocol):
    """The relay's records (``bridge.store.keygen``)."""

    def mirror(self, license_id: str) -> Mirror | None: ...
    def put_mirror(self, mirror: Mirror) -> None: ...
    def first_mirrored_at(self) -> datetime | None: ...
    def checks_due(self, now: datetime, limit: int) -> list[str]: ...
    def periods_due(self, now: datetime, limit: int) -> list[str]: ...
    def timeline(self, license_id: str) -> Timeline: ...
    def record_snapshot(
        self, license_id: str, snap: Snapshot, source: SnapshotSource, delta: int, now: datetime
    ) -> None: ...
    def add_uses(self, license_id: str, delta: int, at: datetime) -> int | None:
        """The counter plus ``delta``, or None when the open period does not hold ``at``."""
        ...

    def plan_resets(self, now: datetime, limit: int) -> int: ...
    def resets_due(self, now: datetime, limit: int) -> list[KeygenReset]: ...
    def reset(self, reset_id: int) -> KeygenReset | None: ...
    def later_reset(self, license_id: str, period_end: datetime) -> bool: ...
    def update_reset(self, reset_id: int, **values: Any) -> None: ...
    def own_reset(self, license_id: str, at: datetime) -> bool: ...
    def resets_of(self, license_id: str) -> list[KeygenReset]: ...
    def status(self, now: datetime) -> KeygenStatus: ...
    def mirrors(self, *, offset: int, limit: int) -> list[Mirror]: ...
