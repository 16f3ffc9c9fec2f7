"""One receiver per configured provider: verify the raw body, then read the event's id, type
and subject into a ``NewDelivery``. A receiver only exists for a configured provider (the
others answer 404), and every refusal is counted by provider and code.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from bridge.domain.errors import WebhookPayloadInvalid, WebhookUnverified
from bridge.domain.keygen import DocumentInvalid, payload_license_id, read_delivery
from bridge.domain.webhooks import NewDelivery
from bridge.webhooks.settings import (
    LagoWebhookSettings,
    M3terWebhookSettings,
    StandardWebhookSettings,
    StripeWebhookSettings,
)
from bridge.webhooks.subjects import lago_subject, m3ter_subject, stripe_subject
from bridge.webhooks.verify import (
    Headers,
    KeygenKey,
    standard_secret,
    verify_keygen,
    verify_lago,
    verify_m3ter,
    verify_standard,
    verify_stripe,
)

log = structlog.get_logger(__name__)

MAX_ID = 255
MAX_TYPE = 128


class Receiver(Protocol):
    @property
    def provider(self) -> str: ...

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        """Verify, then parse: raise ``WebhookUnverified`` (401) or ``WebhookPayloadInvalid``
        (400); nothing is stored either way."""
        ...


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookPayloadInvalid("the body is not JSON") from None
    if not isinstance(value, dict):
        raise WebhookPayloadInvalid("the body is not a JSON object")
    return value


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise WebhookPayloadInvalid(f"the {what} is missing or not a string of 1 to {limit}")
    return value


def _new(
    provider: str, delivery_id: object, event_type: object, body: bytes, subject: str | None
) -> NewDelivery:
    return NewDelivery(
        provider=provider,
        delivery_id=_text(delivery_id, "delivery id", MAX_ID),
        event_type=_text(event_type, "event type", MAX_TYPE),
        body=body.decode(),
        subject=subject[:255] if subject else None,
    )


class LagoPublicKey:
    """Lago's webhook public key: configured, or fetched once (then cached)."""

    def __init__(self, pem: str | None, fetch: Callable[[], str] | None) -> None:
        self._pem = pem
        self._fetch = fetch
        self._lock = threading.Lock()

    def get(self) -> str | None:
        if self._pem is None and self._fetch is not None:
            with self._lock:
                if self._pem is None:
                    self._pem = self._fetch()
        return self._pem


@dataclass
class LagoReceiver:
    settings: LagoWebhookSettings
    public_key: LagoPublicKey
    provider: str = "lago"

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        hmac_key = self.settings.hmac_key
        algorithm = headers.get("x-lago-signature-algorithm", "jwt").strip().lower()
        verify_lago(
            hmac_key=hmac_key.get_secret_value() if hmac_key else None,
            public_key_pem=self.public_key.get() if algorithm == "jwt" else None,
            issuer=self.settings.issuer,
            headers=headers,
            body=body,
        )
        event = _object(body)
        return _new(
            self.provider,
            headers.get("x-lago-unique-key"),
            event.get("webhook_type"),
            body,
            lago_subject(event),
        )


@dataclass
class StripeReceiver:
    settings: StripeWebhookSettings
    provider: str = "stripe"

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        secrets = [s.get_secret_value() for s in self.settings.secrets]
        verify_stripe(secrets, self.settings.tolerance_s, headers, body, now)
        event = _object(body)
        return _new(self.provider, event.get("id"), event.get("type"), body, stripe_subject(event))


@dataclass
class M3terReceiver:
    settings: M3terWebhookSettings
    provider: str = "m3ter"

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        assert self.settings.api_key is not None
        assert self.settings.secret is not None
        verify_m3ter(
            api_key=self.settings.api_key.get_secret_value(),
            secret=self.settings.secret.get_secret_value(),
            url=self.settings.url or url,
            tolerance_s=self.settings.tolerance_s,
            headers=headers,
            body=body,
            now=now,
        )
        event = _object(body)
        return _new(
            self.provider, event.get("id"), event.get("eventName"), body, m3ter_subject(event)
        )


@dataclass
class StandardReceiver:
    source: str
    settings: StandardWebhookSettings

    @property
    def provider(self) -> str:
        return f"standard/{self.source}"

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        key = standard_secret(self.settings.secret.get_secret_value())
        verify_standard([key], self.settings.tolerance_s, headers, body, now)
        event = _object(body)
        return _new(self.provider, headers.get("webhook-id"), event.get("type"), body, None)


def _host_of(netloc: str) -> str:
    """The host without its port (Keygen signs Ruby's ``URI#host``)."""
    if netloc.startswith("["):  # an IPv6 literal keeps its brackets
        return netloc.split("]", 1)[0] + "]"
    host, _, port = netloc.rpartition(":")
    return host if host and port.isdigit() else netloc


@dataclass
class KeygenReceiver:
    """Keygen's ``webhook-events`` deliveries, keyed on ``meta.idempotencyToken`` (a manual
    retry in Keygen's dashboard is a new event id with the same token)."""

    account_id: str
    key: KeygenKey
    algorithm: str
    tolerance_s: float
    public_host: str | None = None
    provider: str = "keygen"

    def accept(self, headers: Headers, body: bytes, url: str, now: datetime) -> NewDelivery:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        verify_keygen(
            key=self.key,
            algorithm=self.algorithm,
            account_id=self.account_id,
            method="POST",
            target=target,
            host=self.public_host or _host_of(parts.netloc),
            tolerance_s=self.tolerance_s,
            headers=headers,
            body=body,
            now=now,
        )
        try:
            delivery = read_delivery(_object(body))
        except DocumentInvalid as exc:
            raise WebhookPayloadInvalid(str(exc)) from None
        return _new(
            self.provider,
            delivery.token,
            delivery.event,
            body,
            payload_license_id(delivery.payload),
        )


class Receivers:
    """The configured receivers by provider, and the count of refused deliveries."""

    def __init__(self, receivers: Mapping[str, Receiver]) -> None:
        self._receivers = dict(receivers)
        self._rejected: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def get(self, provider: str) -> Receiver | None:
        return self._receivers.get(provider)

    def accept(
        self, receiver: Receiver, headers: Headers, body: bytes, url: str, now: datetime
    ) -> NewDelivery:
        try:
            return receiver.accept(headers, body, url, now)
        except (WebhookUnverified, WebhookPayloadInvalid) as exc:
            with self._lock:
                self._rejected[(receiver.provider, exc.code)] += 1
            log.warning("webhook_rejected", provider=receiver.provider, code=exc.code)
            raise

    def rejected(self) -> dict[str, dict[str, int]]:
        """Refused deliveries since the process started, by provider then code."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (provider, code), n in sorted(self._rejected.items()):
                out.setdefault(provider, {})[code] = n
        return out
