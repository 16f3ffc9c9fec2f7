"""A fake Keygen account for the relay's tests, as ../shared/reference/keygen.md describes
Keygen (sections 1, 4 and 5):

- it keeps licenses (``uses``, ``maxUses``, metadata stored snake_case and rendered camelCase,
  ``updated`` moved by every change, in milliseconds) and applies increments, decrements and
  resets, refusing what Keygen refuses (over ``maxUses``, below 0);
- every change makes a ``webhook-events`` delivery: ``attributes.payload`` is the license
  document as a JSON *string*, ``meta.idempotencyToken`` its dedupe key; a manual retry
  (``retry``) is a new event id with the same token;
- deliveries are signed with a real Ed25519 key pair made here (or an RSA one): ``Date``,
  ``Digest: sha-256=<base64>`` and ``Keygen-Signature`` over
  ``(request-target) host date digest`` (lowercase method, the path, the host without port);
- the test decides what Keygen's delivery does: ``deliver`` any event, any number of times, in
  any order, or never (a loss);
- it serves ``GET /v1/accounts/{account}/licenses/{id}`` and
  ``POST .../licenses/{id}/actions/reset-usage`` (Bearer token), with queued faults: ``409``
  (Keygen's conflict detail) and ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import uuid
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cached_property
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

API = "https://api.keygen.test"
WEBHOOK_URL = "https://bridge.example.com/v1/webhooks/keygen"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass
class FakeLicense:
    id: str
    key: str
    policy_id: str
    product_id: str
    metadata: dict[str, Any]  # stored snake_case, as Keygen stores it
    max_uses: int | None
    created: datetime
    updated: datetime
    uses: int = 0
    name: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "data": {
                "id": self.id,
                "type": "licenses",
                "attributes": {
                    "name": self.name,
                    "key": self.key,
                    "uses": self.uses,
                    "maxUses": self.max_uses,
                    "metadata": {_camel(k): v for k, v in self.metadata.items()},
                    "created": _iso(self.created),
                    "updated": _iso(self.updated),
                },
                "relationships": {
                    "account": {"data": {"type": "accounts", "id": "acct"}},
                    "product": {"data": {"type": "products", "id": self.product_id}},
                    "policy": {"data": {"type": "policies", "id": self.policy_id}},
                },
            }
        }


@dataclass
class Event:
    id: str
    token: str
    event: str
    created: datetime
    payload: str  # the license document, a JSON string


@dataclass
class FakeKeygen:
    now: Callable[[], datetime]
    account_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = "prod-token-secret"
    algorithm: str = "ed25519"
    licenses: dict[str, FakeLicense] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    faults: list[tuple[int, float | None]] = field(default_factory=list)  # (status, retry_after)
    requests: list[tuple[str, str]] = field(default_factory=list)
    resets: int = 0  # reset-usage calls that reset

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._last = datetime(2000, 1, 1, tzinfo=UTC)
        self.ed25519 = Ed25519PrivateKey.generate()

    @cached_property
    def rsa(self) -> rsa.RSAPrivateKey:
        """An RSA key, made when first asked for (for the rsa-* algorithms)."""
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # keys, as the dashboard and the API show them ------------------------------------------
    @property
    def public_hex(self) -> str:
        raw = self.ed25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return raw.hex()

    @property
    def public_base64(self) -> str:
        """``meta.keys.ed25519`` of the account resource: base64 of the hex."""
        return base64.b64encode(self.public_hex.encode()).decode()

    @property
    def rsa_pem(self) -> str:
        return (
            self.rsa.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    # the account's changes -------------------------------------------------------------
    def _tick(self) -> datetime:
        """Keygen's clock, in milliseconds, strictly increasing per change."""
        at = self.now().replace(microsecond=self.now().microsecond // 1000 * 1000)
        if at <= self._last:
            at = self._last + timedelta(milliseconds=1)
        self._last = at
        return at

    def _emit(self, name: str, lic: FakeLicense, token: str | None = None) -> Event:
        created = lic.updated + timedelta(milliseconds=2)
        event = Event(
            str(uuid.uuid4()), token or uuid.uuid4().hex, name, created, json.dumps(lic.document())
        )
        self.events.append(event)
        return event

    def create(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        max_uses: int | None = None,
        policy_id: str = "11111111-2222-3333-4444-555555555555",
        product_id: str = "99999999-8888-7777-6666-555555555555",
        uses: int = 0,
    ) -> tuple[FakeLicense, Event]:
        at = self._tick()
        lic = FakeLicense(
            str(uuid.uuid4()),
            f"KEY-{uuid.uuid4().hex[:12].upper()}",
            policy_id,
            product_id,
            dict(metadata or {}),
            max_uses,
            at,
            at,
            uses,
        )
        self.licenses[lic.id] = lic
        return lic, self._emit("license.created", lic)

    def increment(self, license_id: str, n: int = 1) -> Event:
        return self._change(license_id, n, "license.usage.incremented")

    def decrement(self, license_id: str, n: int = 1) -> Event:
        return self._change(license_id, -n, "license.usage.decremented")

    def _change(self, license_id: str, delta: int, name: str) -> Event:
        with self._lock:
            lic = self.licenses[license_id]
            uses = lic.uses + delta
            if uses < 0 or (lic.max_uses is not None and uses > lic.max_uses):
                raise ValueError("Keygen refuses this change (422)")
            lic.uses, lic.updated = uses, self._tick()
            return self._emit(name, lic)

    def reset(self, license_id: str) -> Event:
        """A reset made in Keygen (the dashboard, another integration): not the bridge's."""
        with self._lock:
            lic = self.licenses[license_id]
            lic.uses, lic.updated = 0, self._tick()
            return self._emit("license.usage.reset", lic)

    def update_metadata(self, license_id: str, metadata: dict[str, Any]) -> Event:
        lic = self.licenses[license_id]
        lic.metadata, lic.updated = dict(metadata), self._tick()
        return self._emit("license.updated", lic)

    def delete(self, license_id: str) -> Event:
        lic = self.licenses.pop(license_id)
        return self._emit("license.deleted", lic)

    def retry(self, event: Event) -> Event:
        """Keygen's manual retry: a new event id, the same idempotency token and payload."""
        again = Event(str(uuid.uuid4()), event.token, event.event, self.now(), event.payload)
        self.events.append(again)
        return again

    # deliveries --------------------------------------------------------------------------
    def body(self, event: Event) -> bytes:
        document = {
            "data": {
                "id": event.id,
                "type": "webhook-events",
                "attributes": {
                    "endpoint": WEBHOOK_URL,
                    "apiVersion": "1.8",
                    "payload": event.payload,
                    "event": event.event,
                    "status": "DELIVERING",
                    "lastResponseCode": None,
                    "lastResponseBody": None,
                    "created": _iso(event.created),
                    "updated": _iso(event.created),
                },
                "relationships": {"account": {"data": {"type": "accounts", "id": self.account_id}}},
                "links": {"self": f"/v1/accounts/{self.account_id}/webhook-events/{event.id}"},
                "meta": {"idempotencyToken": event.token},
            }
        }
        return json.dumps(document).encode()

    def sign(
        self, body: bytes, *, url: str = WEBHOOK_URL, date: datetime | None = None
    ) -> dict[str, str]:
        """The headers Keygen's webhook worker sends with ``body`` to ``url``."""
        parts = httpx.URL(url)
        target = parts.raw_path.decode() or "/"
        when = format_datetime((date or self.now()).astimezone(UTC), usegmt=True)
        digest = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
        signing = (
            f"(request-target): post {target}\nhost: {parts.host}\ndate: {when}\ndigest: {digest}"
        ).encode()
        if self.algorithm == "ed25519":
            raw = self.ed25519.sign(signing)
        elif self.algorithm == "rsa-pss-sha256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
            raw = self.rsa.sign(signing, pss, hashes.SHA256())
        else:
            raw = self.rsa.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        signature = base64.b64encode(raw).decode()
        return {
            "User-Agent": "Keygen/1.8 (+https://keygen.sh/docs/api/webhooks/)",
            "Content-Type": "application/json",
            "Date": when,
            "Digest": digest,
            "Keygen-Date": when,
            "Keygen-Digest": digest,
            "Keygen-Version": "1.8",
            "Keygen-Signature": (
                f'keyid="{self.account_id}", algorithm="{self.algorithm}", '
                f'signature="{signature}", headers="(request-target) host date digest"'
            ),
        }

    @staticmethod
    def scramble(
        events: list[Event], rng: random.Random, *, most: int = 3, keep: Set[str] = frozenset()
    ) -> list[Event]:
        """What Keygen's delivery may make of ``events``: each sent 0 to ``most`` times (lost,
        or duplicated by retries), in any order (a delayed retry arrives after later events).
        Events whose id is in ``keep`` are sent at least once."""
        sent = [e for e in events for _ in range(rng.randint(1 if e.id in keep else 0, most))]
        rng.shuffle(sent)
        return sent

    def delivery(self, event: Event) -> tuple[bytes, dict[str, str]]:
        body = self.body(event)
        return body, self.sign(body)

    # the API -----------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append((request.method, request.url.path))
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return _error(401, "Unauthorized", "Token format is invalid", "TOKEN_INVALID")
            if self.faults:
                status, retry_after = self.faults.pop(0)
                headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
                detail = "failed to increment due to another conflicting update"
                return _error(
                    status,
                    "Conflict" if status == 409 else "Too many requests",
                    detail if status == 409 else "Throttled",
                    None,
                    headers,
                )
            prefix = f"/v1/accounts/{self.account_id}/licenses/"
            path = request.url.path
            if not path.startswith(prefix):
                return _error(404, "Not found", "no such route", "NOT_FOUND")
            rest = path.removeprefix(prefix)
            license_id, _, action = rest.partition("/")
            lic = self.licenses.get(license_id)
            if lic is None:
                detail = f"The requested license '{license_id}' was not found"
                return _error(404, "Not found", detail, "NOT_FOUND")
            if request.method == "GET" and not action:
                return _document(lic.document())
            if request.method == "POST" and action == "actions/reset-usage":
                lic.uses, lic.updated = 0, self._tick()
                self.resets += 1
                self._emit("license.usage.reset", lic)
                return _document(lic.document())
            return _error(404, "Not found", "no such route", "NOT_FOUND")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), base_url=API)


def _document(document: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=document, headers={"Content-Type": "application/vnd.api+json"})


def _error(
    status: int,
    title: str,
    detail: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    error: dict[str, Any] = {"title": title, "detail": detail}
    if code:
        error["code"] = code
    return httpx.Response(
        status, json={"meta": {"id": str(uuid.uuid4())}, "errors": [error]}, headers=headers
    )
