"""The account's Ed25519 signing key: where it lives, how it is created and how it is shown.

Keygen signs every API response with the account's Ed25519 key and clients verify with the
public half, so the key must survive restarts and be the same in every API process. Unlike the
admin token it cannot be kept as a digest. It is, in order of precedence:

1. ``signing.key`` (``BRIDGE_SIGNING__KEY``): the 32-byte private seed, hex (as Keygen stores it);
2. the file ``signing.key_file``, by default ``meterbridge-signing.key`` beside the SQLite
   database (in the working directory for PostgreSQL): the same hex, mode 0600.

``meterbridge serve`` creates the file when neither exists; several processes starting at once
agree on one key, because the file is published with a hard link that fails if it exists.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.settings import Settings

KEY_FILE_NAME = "meterbridge-signing.key"


class SigningKeyInvalid(Exception):
    """The configured or stored key is not 64 hex digits."""


@dataclass(frozen=True, slots=True)
class AccountKey:
    """An Ed25519 private key and the two forms Keygen shows its public half in."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_hex(cls, text: str, *, source: str) -> AccountKey:
        try:
            seed = bytes.fromhex(text.strip())
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise SigningKeyInvalid(f"{source}: expected 64 hex digits (an Ed25519 private key)")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> bytes:
        """Ed25519 over ``data`` (license files, signed license keys)."""
        return self.private.sign(data)

    def private_hex(self) -> str:
        raw = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return raw.hex()

    def public_hex(self) -> str:
        """The form Keygen's dashboard shows and clients (keygen-rs, keygen-go) configure."""
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return raw.hex()

    def public_base64(self) -> str:
        """The form Keygen's API shows in the account's ``meta.keys.ed25519``: base64 of the hex."""
        return base64.b64encode(self.public_hex().encode()).decode()


def key_path(settings: Settings) -> Path:
    """Where the key file is: configured, else beside the SQLite file, else the working dir."""
    if settings.signing.key_file is not None:
        return Path(settings.signing.key_file)
    prefix = "sqlite:///"
    url = settings.database_url
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix) :].split("?")[0]).parent / KEY_FILE_NAME
    return Path(KEY_FILE_NAME)


def load_key(settings: Settings) -> AccountKey | None:
    """The configured key, else the stored one, else None."""
    if settings.signing.key is not None:
        return AccountKey.from_hex(settings.signing.key.get_secret_value(), source="signing.key")
    path = key_path(settings)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return AccountKey.from_hex(text, source=str(path))


def ensure_key(settings: Settings) -> tuple[AccountKey, Path | None]:
    """The key, created and stored first if there is none; the path is set when it was created."""
    key = load_key(settings)
    if key is not None:
        return key, None
    path = key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AccountKey.generate()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key.private_hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another process published first
        except FileExistsError:
            return AccountKey.from_hex(path.read_text(), source=str(path)), None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key, path


@dataclass(frozen=True, slots=True)
class StoredKey:
    """Signs with the stored key, created on first use as ``serve`` would: the CLI signs only
    the keys of licenses whose policy is ED25519_SIGN, and creates no key file otherwise."""

    settings: Settings

    def sign(self, data: bytes) -> bytes:
        return ensure_key(self.settings)[0].sign(data)
