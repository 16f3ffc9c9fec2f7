"""Signed license keys: Keygen's ``ED25519_SIGN`` scheme.

A policy with ``scheme: ED25519_SIGN`` mints each license's key as Keygen does
(``app/models/license.rb``, ``generate_ed25519_signed_key!``)::

    key/<base64url(dataset)>.<base64url(Ed25519 signature of "key/<base64url(dataset)>")>

with padded URL-safe base64 (Ruby's ``Base64.urlsafe_encode64``). The dataset is the key the
request sent, after Keygen's template variables (``{{id}}``, ``{{expiry}}``, ...), or, with no
key sent, Keygen's default JSON (``default_seed``). A client verifies the key offline with the
account's public key and reads the dataset (keygen-rs ``src/verifier.rs``, ``verify_key``).

Keygen's size limit is on the dataset: 1 to 16 KiB (``KEY_MAX``); the signed key is longer
(a third more, plus about 90 characters), which is why the store finds keys by their digest.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime

from bridge.domain.checkout import compact_json, keygen_time
from bridge.domain.errors import KeyInvalid, SchemeNotAllowed
from bridge.domain.ports import Signer

ED25519_SIGN = "ED25519_SIGN"
SCHEMES = (ED25519_SIGN,)
# Keygen's other schemes (``Policy::CRYPTO_SCHEMES``) need RSA or ECDSA account keys.
KEYGEN_ONLY_SCHEMES = (
    "LEGACY_ENCRYPT",
    "RSA_2048_PKCS1_ENCRYPT",
    "RSA_2048_PKCS1_SIGN",
    "RSA_2048_PKCS1_PSS_SIGN",
    "RSA_2048_JWT_RS256",
    "RSA_2048_PKCS1_SIGN_V2",
    "RSA_2048_PKCS1_PSS_SIGN_V2",
    "ECDSA_P256_SIGN",
)
KEY_MAX = 16_384  # Keygen: 16.kilobytes, for any key (a signed key's dataset)
_TEMPLATE = re.compile(r"{{(\w+)}}")


def check_scheme(scheme: str | None) -> str | None:
    """A policy's scheme: none (plain keys) or ``ED25519_SIGN``."""
    if scheme is None or scheme in SCHEMES:
        return scheme
    if scheme in KEYGEN_ONLY_SCHEMES:
        raise SchemeNotAllowed(
            "unsupported signing scheme (the bridge signs with its Ed25519 key only: "
            f"{ED25519_SIGN})"
        )
    raise SchemeNotAllowed


def default_seed(
    *,
    account: str,
    product_id: str,
    policy_id: str,
    policy_duration: int | None,
    license_id: str,
    created: datetime,
    expiry: datetime | None,
) -> str:
    """Keygen's dataset of a key minted without one sent (``default_seed_key``); the bridge has
    no users, so ``user`` is null."""
    return compact_json(
        {
            "account": {"id": account},
            "product": {"id": product_id},
            "policy": {"id": policy_id, "duration": policy_duration},
            "user": None,
            "license": {
                "id": license_id,
                "created": keygen_time(created),
                "expiry": keygen_time(expiry),
            },
        }
    )


def formatted_seed(template: str, variables: Mapping[str, object]) -> str:
    """Keygen's ``TemplateFormatService``: ``{{name}}`` becomes the variable (case-insensitive),
    or nothing when it is unknown or null."""

    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1).lower())
        return "" if found is None else str(found)

    return _TEMPLATE.sub(value, template)


def check_seed(seed: str) -> str:
    if not 1 <= len(seed.encode()) <= KEY_MAX:
        raise KeyInvalid(f"is too long (maximum is {KEY_MAX} bytes)")
    return seed


def mint(seed: str, signer: Signer) -> str:
    """The signed key of ``seed``."""
    signing_data = "key/" + base64.urlsafe_b64encode(seed.encode()).decode()
    signature = base64.urlsafe_b64encode(signer.sign(signing_data.encode())).decode()
    return f"{signing_data}.{signature}"
