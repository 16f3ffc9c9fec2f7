"""Response signatures as Keygen makes them, so Keygen's clients can verify the bridge.

Every response, errors and 204s included, gets ``Date`` (the only one: ``serve`` tells uvicorn
not to add its own), ``Digest: sha-256=<base64 of the body's SHA-256>`` and
``Keygen-Signature: keyid="<account>", algorithm="ed25519", signature="<base64>",
headers="(request-target) host date digest"``, plus Keygen's debugging copies ``Keygen-Date``
and ``Keygen-Digest``. The signed string is draft-cavage-http-signatures-08's four lines::

    (request-target): <lowercase method> <path as received>[?<query>]
    host: <public_host, else the Host header exactly as received, port included>
    date: <the Date header>
    digest: <the Digest header>

Keygen signs over Rails' ``request.host`` (no port) because its clients reach it on 443; the
clients themselves (keygen-rs) sign-check ``host:port`` whenever the URL has a port, so the
bridge signs the Host header as received.

``Keygen-Accept-Signature: [keyid="<account>", ]algorithm="ed25519"`` is read as Keygen reads
it; a malformed value, another algorithm (Keygen also offers RSA and ECDSA keys, the bridge has
only the Ed25519 one) or another key id is answered 400 ``ACCEPT_SIGNATURE_INVALID`` with
Keygen's detail, unsigned.

This is a pure ASGI middleware placed outside Starlette's error middleware (see
``bridge.api.app``), so even an unexpected 500 is signed; it holds the response until its last
body chunk, which for this API's JSON documents is one chunk anyway.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.errors import error_response
from bridge.api.middleware import request_id
from bridge.domain.errors import AcceptSignatureInvalid

SIGNED_HEADERS = "(request-target) host date digest"
ALGORITHM = "ed25519"

# Keygen's ACCEPT_SIGNATURE_RE (app/controllers/concerns/signature_methods.rb), case-insensitive.
_ACCEPT = re.compile(
    r'\A(keyid="(?P<keyid>[^"]+)")?(\s*,\s*)?(algorithm="(?P<algorithm>[^"]+)")(\s*;\s*)?\Z',
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Signing:
    """What the signer needs: the account id (the ``keyid``), its key, the public host if a proxy
    stands in front, and the clock the ``Date`` is read from."""

    account: str
    key: Ed25519PrivateKey
    now: Callable[[], datetime]
    public_host: str | None = None


def digest_header(body: bytes) -> str:
    return "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def signing_string(method: str, target: str, host: str, date: str, digest: str) -> bytes:
    return (
        f"(request-target): {method.lower()} {target or '/'}\nhost: {host}\n"
        f"date: {date}\ndigest: {digest}"
    ).encode()


def accepted_algorithm(header: str | None, account: str) -> str:
    """The algorithm a request accepts (Keygen's default when the header is blank), or the 400."""
    if header is None or not header.strip():
        return ALGORITHM
    match = _ACCEPT.match(header)
    if match is None:
        raise AcceptSignatureInvalid("invalid accept-signature header (malformed)")
    if match["algorithm"].lower() != ALGORITHM:
        raise AcceptSignatureInvalid("invalid accept-signature header (unsupported algorithm)")
    if match["keyid"] is not None and match["keyid"] != account:
        raise AcceptSignatureInvalid("invalid accept-signature header (keyid not found)")
    return str(match["algorithm"])  # echoed as the client spelled it, as Keygen does


def target(scope: Scope) -> str:
    """The request target as received: the raw path and the query."""
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (path + b"?" + query if query else path).decode("latin-1")


def _host(scope: Scope, headers: Headers) -> str:
    return host_of(scope, headers.get("host"))


def host_of(scope: Scope, host: str | None) -> str:
    """The Host header as received, else the server's address."""
    if host is not None:
        return host
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else ""


class Signer:
    """The signature headers of one response. The ``Date`` text is formatted once per second
    (the clock's second), not once per response."""

    def __init__(self, signing: Signing) -> None:
        self.signing = signing
        self._second: int | None = None
        self._date = b""

    def _date_of(self, now: datetime) -> bytes:
        second = int(now.timestamp())
        if second != self._second:  # a race between threads only formats it twice
            self._date = format_datetime(now.astimezone(UTC), usegmt=True).encode()
            self._second = second
        return self._date

    def headers(
        self, method: str, target: str, host: str, body: bytes, algorithm: str | None
    ) -> list[tuple[bytes, bytes]]:
        date_bytes = self._date_of(self.signing.now())
        date = date_bytes.decode()
        digest = digest_header(body)
        digest_bytes = digest.encode()
        out = [
            (b"date", date_bytes),
            (b"digest", digest_bytes),
            (b"keygen-date", date_bytes),
            (b"keygen-digest", digest_bytes),
        ]
        if algorithm is not None:
            raw = self.signing.key.sign(signing_string(method, target, host, date, digest))
            signature = (
                f'keyid="{self.signing.account}", algorithm="{algorithm}", '
                f'signature="{base64.b64encode(raw).decode()}", headers="{SIGNED_HEADERS}"'
            )
            out.append((b"keygen-signature", signature.encode("latin-1")))
        return out


class ResponseSigner:
    """Signs every HTTP response of ``app`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, signing: Signing) -> None:
        self.app = app
        self.signing = signing
        self.signer = Signer(signing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            algorithm: str | None = accepted_algorithm(
                headers.get("keygen-accept-signature"), self.signing.account
            )
            app = self.app
        except AcceptSignatureInvalid as error:
            algorithm = None  # Keygen answers these unsigned
            rid = request_id(headers.get("x-request-id"))
            response = error_response(error, rid)
            response.headers["x-request-id"] = rid
            app = response
        host = self.signing.public_host or _host(scope, headers)
        start: Message = {}
        chunks: list[bytes] = []

        async def send_signed(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            extra = self.signer.headers(scope["method"], target(scope), host, body, algorithm)
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"date"]
            await send({**start, "headers": kept + extra})
            await send({"type": "http.response.body", "body": body})

        await app(scope, receive, send_signed)
