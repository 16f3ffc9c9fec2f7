"""Signing webhook deliveries the way each provider does, for the tests (keys made per test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def lago_hmac(key: str, body: bytes, unique_key: str) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Lago-Signature": signature,
        "X-Lago-Signature-Algorithm": "hmac",
        "X-Lago-Unique-Key": unique_key,
        "Content-Type": "application/json",
    }


class RsaKeys:
    """An RSA key pair made for one test (Lago's JWT scheme)."""

    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def lago_jwt(self, body: bytes, unique_key: str, issuer: str) -> dict[str, str]:
        token = jwt.encode({"data": body.decode(), "iss": issuer}, self.private, algorithm="RS256")
        return {
            "X-Lago-Signature": token,
            "X-Lago-Signature-Algorithm": "jwt",
            "X-Lago-Unique-Key": unique_key,
            "Content-Type": "application/json",
        }


def stripe(secrets: list[str], body: bytes, at: datetime) -> dict[str, str]:
    t = int(at.timestamp())
    parts = [f"t={t}"] + [
        "v1=" + hmac.new(s.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        for s in secrets
    ]
    return {"Stripe-Signature": ",".join(parts), "Content-Type": "application/json"}


def standard(secret: str, msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    t = int(at.timestamp())
    mac = hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(t),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "Content-Type": "application/json",
    }


def m3ter(api_key: str, secret: str, url: str, body: bytes, at: datetime) -> dict[str, str]:
    t = str(int(at.timestamp()))
    signed = f"{url}|{api_key}|{t}|".encode() + body
    return {
        "X-m3ter-apikey": api_key,
        "X-m3ter-timestamp": t,
        "X-m3ter-signature": hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }
