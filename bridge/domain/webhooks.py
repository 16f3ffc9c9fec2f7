"""Webhook deliveries as the inbox holds them, and their lifecycle.

    received ──claim──> inflight ──> applied | ignored | unmatched
        ^                  │
        └──── retry ───────┤ (handling failed; due again after a backoff)
                           └──> failed   (parked after ``max_attempts``; ``webhooks replay``)

A delivery is unique per (provider, delivery id): a redelivery finds the stored one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bridge.domain.model import License


class DeliveryStatus(StrEnum):
    RECEIVED = "received"
    INFLIGHT = "inflight"
    APPLIED = "applied"
    IGNORED = "ignored"  # an event type no rule handles
    UNMATCHED = "unmatched"  # no license maps to the subscription (yet)
    FAILED = "failed"  # parked after repeated handling failures


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A verified delivery about to be stored."""

    provider: str
    delivery_id: str
    event_type: str
    body: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    id: int
    provider: str
    delivery_id: str
    event_type: str
    status: DeliveryStatus
    subject: str | None
    body: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    received_at: datetime
    handled_at: datetime | None
    effects: tuple[str, ...] = field(default=())


# A license's subjects: (provider, the platform's subscription or account id) pairs, from the
# providers' templates; a license lacking a template's value has no subject for that provider.
SubjectMapper = Callable[[License], list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class WebhookEffect:
    """What a delivery did to a license (its webhook history)."""

    license_id: str
    delivery: int  # the stored delivery's id
    provider: str
    delivery_id: str
    action: str
    detail: str | None
    at: datetime
