"""Signature verifiers, one per scheme. Pure: each takes the raw body bytes, the headers and
(where a timestamp is signed) the current time, and returns nothing or raises.

Rules common to all: verify the exact bytes received, before anything is parsed; compare in
constant time (``hmac.compare_digest``); where a timestamp is signed, accept it only within
``tolerance_s`` of now, in both directions (a bounded skew window). Secrets never appear in an
error's detail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime

import jwt

from bridge.domain.errors import (
    WebhookSignatureInvalid,
    WebhookSignatureMissing,
    WebhookTimestampStale,
)

Headers = Mapping[str, str]  # case-insensitive in practice (Starlette); lower-case names here


def _header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise WebhookSignatureMissing(f"the {name} header is missing")
    return value.strip()


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_time(timestamp: str, now: datetime, tolerance_s: float, header: str) -> None:
    try:
        signed = int(timestamp)
    except ValueError:
        raise WebhookSignatureInvalid(f"the {header} timestamp is not an integer") from None
    if tolerance_s > 0 and abs(now.timestamp() - signed) > tolerance_s:
        raise WebhookTimestampStale(
            f"the signed timestamp is more than {tolerance_s:g} s from the bridge's clock"
        )


def _any_equal(expected: bytes, candidates: Iterable[bytes]) -> bool:
    # Every candidate is compared (no early exit), each in constant time.
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(expected, candidate)
    return found


def verify_lago_hmac(key: str, headers: Headers, body: bytes) -> None:
    """``X-Lago-Signature`` = base64(HMAC-SHA256(key=the org's HMAC token, msg=body)).

    Lago signs no timestamp in this scheme: replays are stopped by the inbox's unique key."""
    signature = _header(headers, "x-lago-signature")
    expected = base64.b64encode(_mac(key.encode(), body))
    if not hmac.compare_digest(expected, signature.encode("ascii", "replace")):
        raise WebhookSignatureInvalid()


def verify_lago_jwt(public_key_pem: str, issuer: str | None, headers: Headers, body: bytes) -> None:
    """``X-Lago-Signature`` is an RS256 JWT whose ``data`` claim is exactly the body and whose
    ``iss`` is the Lago API URL. Lago puts no ``exp`` in it (replays: the inbox's unique key)."""
    token = _header(headers, "x-lago-signature")
    options: dict[str, object] = {"require": ["data", "iss"] if issuer else ["data"]}
    try:
        claims = jwt.decode(
            token,
            public_key_pem,
            algorithms=["RS256"],
            issuer=issuer,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.InvalidIssuerError:
        raise WebhookSignatureInvalid("the JWT's issuer is not the configured one") from None
    except jwt.PyJWTError:
        raise WebhookSignatureInvalid() from None
    data = claims.get("data")
    if not isinstance(data, str) or not hmac.compare_digest(data.encode(), body):
        raise WebhookSignatureInvalid("the JWT's data claim is not the request body")


def verify_lago(
    *,
    hmac_key: str | None,
    public_key_pem: str | None,
    issuer: str | None,
    headers: Headers,
    body: bytes,
) -> None:
    """Either scheme, as ``X-Lago-Signature-Algorithm`` says (Lago's default is ``jwt``); a
    scheme the bridge has no key for is refused."""
    _header(headers, "x-lago-signature")
    algorithm = headers.get("x-lago-signature-algorithm", "jwt").strip().lower()
    if algorithm == "hmac" and hmac_key:
        verify_lago_hmac(hmac_key, headers, body)
    elif algorithm == "jwt" and public_key_pem:
        verify_lago_jwt(public_key_pem, issuer, headers, body)
    else:
        raise WebhookSignatureInvalid(
            f"signature algorithm {algorithm[:16]!r} is not configured for Lago"
        )


def verify_stripe(
    secrets: Iterable[str], tolerance_s: float, headers: Headers, body: bytes, now: datetime
) -> None:
    """``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``: HMAC-SHA256 of ``{t}.{body}``
    keyed with the endpoint secret (``whsec_...`` used as is). Any ``v1`` may match any
    configured secret (rotation); other schemes (``v0``) are ignored."""
    header = _header(headers, "stripe-signature")
    timestamp: str | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value.encode("ascii", "replace"))
    if timestamp is None or not signatures:
        raise WebhookSignatureInvalid("Stripe-Signature needs t= and at least one v1=")
    signed = timestamp.encode("ascii", "replace") + b"." + body
    expected = [_mac(s.encode(), signed).hex().encode() for s in secrets]
    if not any(_any_equal(e, signatures) for e in expected):
        raise WebhookSignatureInvalid()
    _check_time(timestamp, now, tolerance_s, "Stripe-Signature")


def standard_secret(secret: str) -> bytes:
    """A Standard Webhooks secret ``whsec_<base64>`` as key bytes."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None


def verify_standard(
    secrets: Iterable[bytes], tolerance_s: float, headers: Headers, body: bytes, now: datetime
) -> None:
    """Standard Webhooks: ``webhook-signature`` holds space-separated ``v1,<base64>`` values,
    each base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))."""
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    header = _header(headers, "webhook-signature")
    signatures = [
        value.encode("ascii", "replace")
        for version, _, value in (p.partition(",") for p in header.split())
        if version == "v1"
    ]
    if not signatures:
        raise WebhookSignatureInvalid("webhook-signature has no v1 signature")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [base64.b64encode(_mac(key, signed)) for key in secrets]
    if not any(_any_equal(e, signatures) for e in expected):
        raise WebhookSignatureInvalid()
    _check_time(timestamp, now, tolerance_s, "webhook-timestamp")


def verify_m3ter(
    *,
    api_key: str,
    secret: str,
    url: str,
    tolerance_s: float,
    headers: Headers,
    body: bytes,
    now: datetime,
) -> None:
    """m3ter ``M3TER_SIGNED_REQUEST``, as far as the reference establishes it (unverified
    against m3ter's documentation; see the README): headers ``X-m3ter-apikey``,
    ``X-m3ter-timestamp`` and ``X-m3ter-signature``, the signature an HMAC-SHA256 keyed with the
    secret over ``url|apiKey|timestamp|body``. Hex and base64 encodings are both accepted (the
    same MAC either way); a timestamp over 10^11 is taken as milliseconds."""
    given_key = _header(headers, "x-m3ter-apikey")
    timestamp = _header(headers, "x-m3ter-timestamp")
    signature = _header(headers, "x-m3ter-signature").encode("ascii", "replace")
    key_ok = hmac.compare_digest(given_key.encode(), api_key.encode())
    signed = "|".join((url, given_key, timestamp)).encode() + b"|" + body
    mac = _mac(secret.encode(), signed)
    if not (_any_equal(signature, (mac.hex().encode(), base64.b64encode(mac))) and key_ok):
        raise WebhookSignatureInvalid()
    seconds = timestamp
    if timestamp.isdigit() and int(timestamp) > 10**11:
        seconds = str(int(timestamp) // 1000)
    _check_time(seconds, now, tolerance_s, "X-m3ter-timestamp")
