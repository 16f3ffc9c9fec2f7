"""What each event does: the default rules per provider, the overrides of
``[webhooks.<provider>.rules]`` and the reading of each event's fields. Pure.

A rule maps an event type to actions, written ``"suspend"`` or ``"align_period,reinstate"``;
``"none"`` turns an event off (stored as ``ignored``). Event types without a rule are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    SUSPEND = "suspend"  # the license answers Keygen's suspended error
    REINSTATE = "reinstate"  # lifts a suspension
    FLAG = "flag"  # recorded in the license's webhook history, nothing else
    RECORD = "record"  # the same, for alerts and thresholds
    CLOSE_PERIOD = "close_period"  # close the usage period at the invoiced boundary
    ALIGN_PERIOD = "align_period"  # the usage period follows the subscription's
    REJECT_ENTRIES = "reject_entries"  # the platform will not bill these ledger entries


LICENSE_ACTIONS = frozenset(Action) - {Action.REJECT_ENTRIES}

DEFAULT_RULES: dict[str, dict[str, str]] = {
    "lago": {
        "subscription.started": "align_period,reinstate",
        "subscription.updated": "align_period",
        "subscription.terminated": "suspend",
        "invoice.created": "close_period",
        "invoice.payment_overdue": "flag",
        "events.errors": "reject_entries",
        "event.error": "reject_entries",
        "alert.triggered": "record",
        "subscription.usage_threshold_reached": "record",
    },
    "stripe": {
        "customer.subscription.deleted": "suspend",
        "customer.subscription.resumed": "reinstate",
        "invoice.created": "close_period",
        "invoice.payment_failed": "flag",
    },
    "m3ter": {"billing.bill.updated": "close_period"},
    "standard": {},
}


def parse_actions(value: str) -> tuple[Action, ...]:
    """``"suspend,flag"`` -> the actions; ``"none"`` or ``""`` -> none. ``ValueError`` names
    an unknown action."""
    names = [n.strip() for n in value.split(",") if n.strip() and n.strip() != "none"]
    try:
        return tuple(Action(n) for n in names)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise ValueError(f"unknown action in {value!r}; use {known} or none") from None


def actions_for(provider: str, event_type: str, overrides: Mapping[str, str]) -> tuple[Action, ...]:
    kind = provider.split("/", 1)[0]
    rule = overrides.get(event_type, DEFAULT_RULES.get(kind, {}).get(event_type, ""))
    return parse_actions(rule)


@dataclass(frozen=True, slots=True)
class Instruction:
    """An event read for its actions."""

    actions: tuple[Action, ...]
    boundary: datetime | None = None  # CLOSE_PERIOD: where the platform's period ended
    start: datetime | None = None  # ALIGN_PERIOD / after a close: the platform's period
    end: datetime | None = None
    transaction_ids: tuple[str, ...] = ()  # REJECT_ENTRIES
    note: str = ""  # FLAG, RECORD, REJECT_ENTRIES: the reason, as the platform gives it
    skip: str | None = None  # set when the event is not one the actions apply to


def _time(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _exclusive_end(value: object) -> datetime | None:
    """Lago ends a period at local ``end_of_day`` (``...23:59:59Z``); the bridge's ends are
    exclusive: the next whole second."""
    end = _time(value)
    if end is not None and (end.second == 59 or end.microsecond):
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return end


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def interpret(
    provider: str, event_type: str, event: dict[str, Any], actions: tuple[Action, ...]
) -> Instruction:
    kind = provider.split("/", 1)[0]
    reader = {"lago": _lago, "stripe": _stripe, "m3ter": _m3ter}.get(kind)
    if reader is None:
        return Instruction(actions, note=event_type)
    return reader(event_type, event, actions)


def _lago(event_type: str, event: dict[str, Any], actions: tuple[Action, ...]) -> Instruction:
    obj = _dict(event.get(str(event.get("object_type", ""))))
    if event_type == "events.errors":
        ids: list[str] = []
        reasons = []
        for reason, values in obj.items():
            if isinstance(values, list) and values:
                reasons.append(reason)
                ids.extend(v for v in values if isinstance(v, str))
        return Instruction(actions, transaction_ids=tuple(ids), note=",".join(reasons))
    if event_type == "event.error":
        txn = _dict(obj.get("event")).get("transaction_id")
        note = str(obj.get("message") or obj.get("error") or "event.error")[:500]
        return Instruction(
            actions, transaction_ids=(txn,) if isinstance(txn, str) else (), note=note
        )
    if event.get("object_type") == "subscription":
        start = _time(obj.get("current_billing_period_started_at"))
        end = _exclusive_end(obj.get("current_billing_period_ending_at"))
        return Instruction(actions, start=start, end=end, boundary=start, note=event_type)
    if event.get("object_type") == "invoice":
        if obj.get("invoice_type") not in (None, "subscription"):
            return Instruction(
                actions, skip=f"not a subscription invoice ({obj.get('invoice_type')})"
            )
        subs = [s for s in obj.get("subscriptions") or [] if isinstance(s, dict)]
        start = _time(subs[0].get("current_billing_period_started_at")) if subs else None
        end = _exclusive_end(subs[0].get("current_billing_period_ending_at")) if subs else None
        boundary = start
        if boundary is None:  # else the end of the charges the invoice bills
            ends = [
                _exclusive_end(_dict(f.get("properties")).get("charges_to_datetime"))
                for f in obj.get("fees") or []
                if isinstance(f, dict)
            ]
            boundary = max((e for e in ends if e is not None), default=None)
        return Instruction(actions, boundary=boundary, start=start, end=end, note=event_type)
    return Instruction(
        actions, note=str(obj.get("alert_name") or obj.get("code") or event_type)[:500]
    )


def _stripe(event_type: str, event: dict[str, Any], actions: tuple[Action, ...]) -> Instruction:
    obj = _dict(_dict(event.get("data")).get("object"))
    if obj.get("object") == "invoice":
        reason = str(obj.get("billing_reason") or "")
        if event_type == "invoice.created" and not reason.startswith("subscription"):
            return Instruction(actions, skip=f"not a subscription invoice ({reason or 'none'})")
        return Instruction(actions, boundary=_time(obj.get("period_end")), note=event_type)
    if obj.get("object") == "subscription":
        start = _time(obj.get("current_period_start"))
        end = _time(obj.get("current_period_end"))
        return Instruction(actions, start=start, end=end, note=event_type)
    return Instruction(actions, note=event_type)


def _m3ter(event_type: str, event: dict[str, Any], actions: tuple[Action, ...]) -> Instruction:
    bill = next(
        (
            h
            for h in (_dict(event.get("newData")), _dict(event.get("data")), event)
            if "endDateTimeUTC" in h or "locked" in h
        ),
        {},
    )
    if event_type == "billing.bill.updated" and not (
        bill.get("locked") is True or bill.get("status") == "APPROVED"
    ):
        return Instruction(actions, skip="the bill is neither locked nor approved")
    return Instruction(actions, boundary=_time(bill.get("endDateTimeUTC")), note=event_type)
