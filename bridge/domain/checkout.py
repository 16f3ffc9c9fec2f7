"""License and machine files: Keygen's check-out parameters and its certificate format.

A file is a signed snapshot a client verifies offline with the account's public key. Keygen
(``app/services/abstract_checkout_service.rb`` and its license and machine subclasses) builds it
so, and published clients (keygen-rs ``src/license_file.rs``, ``src/verifier.rs``) read it so:

1. the dataset: the license's (or machine's) JSON:API document with its ``included`` resources
   and ``meta: {issued, expiry, ttl}``, as compact JSON;
2. ``enc``: the dataset in strict base64, or, encrypted, ``<ciphertext>.<iv>.<tag>`` (each strict
   base64) under AES-256-GCM keyed by the SHA-256 of the license key (a machine file: of the
   license key followed by the fingerprint), with a random 12-byte IV;
3. ``sig``: strict base64 of the Ed25519 signature of ``"license/" + enc`` (``"machine/"``);
4. the certificate: ``{"enc", "sig", "alg"}`` as JSON, in base64 wrapped at 60 characters (Ruby's
   ``Base64.encode64``), between ``-----BEGIN LICENSE FILE-----`` and ``-----END LICENSE FILE-----``
   lines, ending with a newline.

The parameters are checked in Keygen's order: includes, ttl, algorithm. Invariants: the expiry is
``issued`` advanced by ``ttl`` as Rails advances a time by ``ActiveSupport::Duration.build(ttl)``
(whole calendar years and months first, then the remaining seconds), so a ttl of 2629746 (a
month) from the 16th ends on the 16th of the next month; no ttl (an explicit null) means no expiry.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.domain.commands import UNSET, CheckOut
from bridge.domain.errors import (
    INT4_MAX,
    CheckoutAlgorithmInvalid,
    CheckoutIncludeInvalid,
    CheckoutTtlInvalid,
)
from bridge.domain.ports import Signer

DEFAULT_TTL = 2_629_746  # ActiveSupport's 1.month in seconds: Keygen's default
MIN_TTL = 3600
# Ours: Keygen has no maximum, but keygen-rs reads the ttl as a 32-bit integer.
MAX_TTL = INT4_MAX
_YEAR, _MONTH = 31_556_952, 2_629_746  # ActiveSupport::Duration::PARTS_IN_SECONDS

ENCRYPTION_ALGORITHMS = ("aes-256-gcm",)
ENCODING_ALGORITHMS = ("base64",)
# Keygen's signing algorithms; the bridge's account key is Ed25519 only.
KEYGEN_SIGNING_ALGORITHMS = ("ed25519", "rsa-pss-sha256", "rsa-sha256", "ecdsa-p256")
SIGNING_ALGORITHM = "ed25519"

LICENSE_INCLUDES = ("entitlements", "environment", "product", "policy", "group", "owner", "users")
MACHINE_INCLUDES = (
    "license.entitlements",
    "license.product",
    "license.policy",
    "license.owner",
    "license.users",
    "license",
    "components",
    "environment",
    "group",
    "owner",
)
_LINE = 60  # Ruby's Base64.encode64 line length
IV_BYTES = 12


class FileKind(StrEnum):
    """What is checked out: names the signing prefix and the certificate's banner."""

    LICENSE = "license"
    MACHINE = "machine"

    @property
    def allowed_includes(self) -> tuple[str, ...]:
        return LICENSE_INCLUDES if self is FileKind.LICENSE else MACHINE_INCLUDES

    @property
    def aliases(self) -> dict[str, str]:
        """Keygen's backwards-compatible spelling of the owner include."""
        return {"user": "owner"} if self is FileKind.LICENSE else {"license.user": "license.owner"}

    @property
    def banner(self) -> str:
        return f"{self.value.upper()} FILE"


@dataclass(frozen=True, slots=True)
class CheckoutTerms:
    """A check-out request once checked: what the file will be."""

    algorithm: str  # e.g. "aes-256-gcm+ed25519"
    ttl: int | None  # None: the file never expires
    includes: tuple[str, ...]

    @property
    def encrypted(self) -> bool:
        return self.algorithm.split("+", 1)[0] in ENCRYPTION_ALGORITHMS


def checkout_terms(kind: FileKind, request: CheckOut) -> CheckoutTerms:
    """The request checked as Keygen checks it, in its order (includes, ttl, algorithm)."""
    aliases = kind.aliases
    includes = tuple(dict.fromkeys(aliases.get(name, name) for name in request.include))
    if any(name not in kind.allowed_includes for name in includes):
        raise CheckoutIncludeInvalid
    ttl = DEFAULT_TTL if request.ttl is UNSET else request.ttl
    if ttl is not None and ttl < MIN_TTL:
        raise CheckoutTtlInvalid
    if ttl is not None and ttl > MAX_TTL:
        raise CheckoutTtlInvalid(f"must be less than or equal to {MAX_TTL}")
    return CheckoutTerms(_algorithm(request), ttl, includes)


def _algorithm(request: CheckOut) -> str:
    if not request.algorithm:  # absent, null or blank: from ``encrypt``
        encoding = ENCRYPTION_ALGORITHMS[0] if request.encrypt else ENCODING_ALGORITHMS[0]
        return f"{encoding}+{SIGNING_ALGORITHM}"
    encoding, _, signing = request.algorithm.partition("+")
    if encoding not in (*ENCRYPTION_ALGORITHMS, *ENCODING_ALGORITHMS):
        raise CheckoutAlgorithmInvalid("invalid encoding algorithm")
    if signing not in KEYGEN_SIGNING_ALGORITHMS:
        raise CheckoutAlgorithmInvalid("invalid signing algorithm")
    if signing != SIGNING_ALGORITHM:
        raise CheckoutAlgorithmInvalid("signing algorithm is not supported")
    return request.algorithm


def expiry_after(issued: datetime, ttl: int | None) -> datetime | None:
    """``issued`` advanced by ``ttl`` seconds as Rails does: years, months, then the rest."""
    if ttl is None:
        return None
    years, rest = divmod(ttl, _YEAR)
    months, rest = divmod(rest, _MONTH)
    return _add_months(_add_months(issued, 12 * years), months) + timedelta(seconds=rest)


def _add_months(moment: datetime, months: int) -> datetime:
    """Ruby's ``Date#>>``: the same day ``months`` later, clamped to the month's last day."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def keygen_time(moment: datetime | None) -> str | None:
    """Keygen's timestamps: ISO-8601 UTC with milliseconds (``2022-10-16T14:52:48.000Z``)."""
    if moment is None:
        return None
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def dataset_meta(issued: datetime, expiry: datetime | None, ttl: int | None) -> dict[str, object]:
    return {"issued": keygen_time(issued), "expiry": keygen_time(expiry), "ttl": ttl}


def compact_json(value: object) -> str:
    """Ruby's ``to_json``: no spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def certificate(
    kind: FileKind,
    dataset: str,
    terms: CheckoutTerms,
    signer: Signer,
    *,
    secret: str,
    iv: bytes,
) -> str:
    """The signed certificate of ``dataset`` (encrypted under ``secret`` if the terms say so)."""
    data = dataset.encode()
    if terms.encrypted:
        key = hashlib.sha256(secret.encode()).digest()
        sealed = AESGCM(key).encrypt(iv, data, None)  # ciphertext, then the 16-byte tag
        parts = (sealed[:-16], iv, sealed[-16:])
        enc = ".".join(base64.b64encode(part).decode() for part in parts)
    else:
        enc = base64.b64encode(data).decode()
    sig = base64.b64encode(signer.sign(f"{kind.value}/{enc}".encode())).decode()
    doc = base64.b64encode(compact_json({"enc": enc, "sig": sig, "alg": terms.algorithm}).encode())
    text = doc.decode()
    lines = "\n".join(text[i : i + _LINE] for i in range(0, len(text), _LINE))
    return f"-----BEGIN {kind.banner}-----\n{lines}\n-----END {kind.banner}-----\n"


def file_secret(kind: FileKind, license_key: str, fingerprint: str | None = None) -> str:
    """What the file is encrypted under: the license key, and a machine's fingerprint after it."""
    if kind is FileKind.MACHINE:
        return license_key + (fingerprint or "")
    return license_key
