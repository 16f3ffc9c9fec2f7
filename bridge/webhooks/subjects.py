"""The platform's side named by an event: the subscription (or account) a webhook is about."""

from __future__ import annotations

from typing import Any


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def lago_subject(event: dict[str, Any]) -> str | None:
    """The ``external_subscription_id`` a Lago event is about, where it names one."""
    obj = event.get(str(event.get("object_type", "")))
    if not isinstance(obj, dict):
        return None
    if event.get("object_type") == "subscription":
        return _str(obj.get("external_id"))
    found = _str(obj.get("external_subscription_id"))
    if found is None and isinstance(obj.get("subscriptions"), list):  # an invoice
        for sub in obj["subscriptions"]:
            if isinstance(sub, dict) and _str(sub.get("external_id")):
                return _str(sub.get("external_id"))
    return found


def stripe_subject(event: dict[str, Any]) -> str | None:
    """The subscription id a Stripe event is about (the subscription, or an invoice's)."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    if obj.get("object") == "subscription":
        return _str(obj.get("id"))
    sub = obj.get("subscription")
    if isinstance(sub, dict):
        return _str(sub.get("id"))
    found = _str(sub)
    if found is None:  # newer API versions: invoice.parent.subscription_details.subscription
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, dict) else None
        if isinstance(details, dict):
            found = _str(details.get("subscription"))
    return found


def m3ter_subject(event: dict[str, Any]) -> str | None:
    """The account code (or id) an m3ter event is about, as far as its fields show it."""
    for holder in (event, event.get("newData"), event.get("data")):
        if isinstance(holder, dict):
            for key in ("accountCode", "accountId"):
                if _str(holder.get(key)):
                    return _str(holder.get(key))
    return None
