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
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

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


# Keygen ---------------------------------------------------------------------------------------
KeygenKey = Ed25519PublicKey | RSAPublicKey
_PARAM = re.compile(r'\s*(\w+)="([^"]*)"\s*(?:,|$)')
_COVERED = ("(request-target)", "host", "date", "digest")


def keygen_public_key(text: str, algorithm: str) -> KeygenKey:
    """The account's public key from the dashboard's form (Ed25519: 64 hex digits; RSA: PEM) or
    the API's (``meta.keys``: base64 of that text). ``ValueError`` names what is wrong."""
    raw = text.strip()
    if algorithm == "ed25519":
        if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
            try:
                raw = base64.b64decode(raw, validate=True).decode().strip()
            except (binascii.Error, UnicodeDecodeError):
                raw = ""
        if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
            raise ValueError("an Ed25519 public key is 64 hex digits, or base64 of them")
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
    if "BEGIN" not in raw:
        try:
            raw = base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("an RSA public key is PEM, or base64 of the PEM") from None
    key = serialization.load_pem_public_key(raw.encode())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the PEM is not an RSA public key")
    return key


def keygen_signing_string(covered: Iterable[str], values: Mapping[str, str]) -> bytes:
    """draft-cavage-http-signatures: one ``name: value`` line per covered header, in order."""
    return "\n".join(f"{name}: {values[name]}" for name in covered).encode()


def _keygen_params(header: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position = 0
    while position < len(header):
        match = _PARAM.match(header, position)
        if match is None or match.end() == position:
            raise WebhookSignatureInvalid("Keygen-Signature is malformed")
        params[match.group(1).lower()] = match.group(2)
        position = match.end()
    return params


def _keygen_verify(key: KeygenKey, algorithm: str, signature: bytes, message: bytes) -> None:
    if isinstance(key, Ed25519PublicKey):
        key.verify(signature, message)
    elif algorithm == "rsa-pss-sha256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        key.verify(signature, message, pss, hashes.SHA256())
    else:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def verify_keygen(
    *,
    key: KeygenKey,
    algorithm: str,
    account_id: str,
    method: str,
    target: str,
    host: str,
    tolerance_s: float,
    headers: Headers,
    body: bytes,
    now: datetime,
) -> None:
    """Keygen's ``Keygen-Signature`` (draft-cavage-http-signatures-08): the ``Digest`` is the
    body's SHA-256, the signature covers ``(request-target) host date digest`` as the sender
    made them (``host``: the endpoint URL's host, no port), and the ``Date`` is within
    ``tolerance_s`` of now."""
    params = _keygen_params(_header(headers, "keygen-signature"))
    date = headers.get("date") or headers.get("keygen-date")
    digest = headers.get("digest") or headers.get("keygen-digest")
    if not date or not digest:
        raise WebhookSignatureMissing("the Date or Digest header is missing")
    expected_digest = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    if not hmac.compare_digest(expected_digest.encode(), digest.strip().encode("ascii", "replace")):
        raise WebhookSignatureInvalid("the Digest is not the body's SHA-256")
    if params.get("algorithm", "").lower() != algorithm:
        raise WebhookSignatureInvalid(f"the signature's algorithm is not {algorithm}")
    if params.get("keyid") not in (None, account_id):
        raise WebhookSignatureInvalid("the signature's keyid is not the configured account")
    covered = params.get("headers", "date").lower().split()
    if any(name not in covered for name in _COVERED):
        raise WebhookSignatureInvalid("the signature must cover (request-target) host date digest")
    values = {
        "(request-target)": f"{method.lower()} {target or '/'}",
        "host": host,
        "date": date.strip(),
        "digest": digest.strip(),
    }
    if any(name not in values for name in covered):
        raise WebhookSignatureInvalid("the signature covers a header the bridge does not check")
    try:
        signature = base64.b64decode(params.get("signature", ""), validate=True)
        _keygen_verify(key, algorithm, signature, keygen_signing_string(covered, values))
    except (binascii.Error, InvalidSignature, ValueError):
        raise WebhookSignatureInvalid() from None
    try:
        signed = parsedate_to_datetime(date.strip())
    except (TypeError, ValueError):
        raise WebhookSignatureInvalid("the Date is not an HTTP date") from None
    if signed.tzinfo is None:
        signed = signed.replace(tzinfo=now.tzinfo)
    if tolerance_s > 0 and abs((now - signed).total_seconds()) > tolerance_s:
        raise WebhookTimestampStale(
            f"the signed Date is more than {tolerance_s:g} s from the bridge's clock"
        )
