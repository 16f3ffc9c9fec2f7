"""Bearer authentication: admin, product and license tokens, and ``License <key>``.

Secrets are random; only their SHA-256 digest is stored, so a stolen database holds no token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from bridge.domain.access import Principal, Role
from bridge.domain.errors import (
    LicenseExpired,
    LicenseInvalid,
    LicenseSuspended,
    TokenInvalid,
    TokenMissing,
)
from bridge.domain.model import LicenseStatus
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.service.common import new_id
from bridge.service.principal_cache import PrincipalCache, RevocationWatch

TOKEN_PREFIX = {Role.ADMIN: "admin", Role.PRODUCT: "prod", Role.LICENSE: "activ"}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_token(role: Role) -> str:
    return f"{TOKEN_PREFIX[role]}-{secrets.token_hex(32)}"


class Authenticator:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        admin_token: str | None,
        clock: Clock,
        cache: PrincipalCache | None = None,
    ) -> None:
        self._uows = uows
        self._clock = clock
        self._admin_digest = digest(admin_token) if admin_token else None
        self._cache = cache if cache is not None and cache.enabled else None

    def authenticate(self, authorization: str | None) -> Principal:
        """The bearer named by an ``Authorization`` header, or 401."""
        if not authorization or not authorization.strip():
            raise TokenMissing
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if not credential:
            raise TokenMissing
        scheme = scheme.lower()
        if scheme == "bearer":
            return self._from_token(credential)
        if scheme == "license":
            return self._from_license_key(credential)
        raise TokenInvalid("Authorization scheme must be Bearer or License")

    def known(self, authorization: str | None) -> Principal | None:
        """The bearer without I/O: the configured admin token, or a cached database token."""
        if not authorization or (self._admin_digest is None and self._cache is None):
            return None
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token_digest = digest(credential.strip())
        if self._admin_digest is not None and hmac.compare_digest(token_digest, self._admin_digest):
            return Principal(Role.ADMIN, "admin")
        return None if self._cache is None else self._cache.get(token_digest)

    def watch(self) -> RevocationWatch | None:
        """The thread that keeps the cache's view of revocations current (not started)."""
        return None if self._cache is None else RevocationWatch(self._cache, self._generation)

    def _generation(self) -> int:
        with self._uows() as uow:
            return uow.tokens.generation()

    def _from_token(self, token: str) -> Principal:
        token_digest = digest(token)
        if self._admin_digest is not None and hmac.compare_digest(token_digest, self._admin_digest):
            return Principal(Role.ADMIN, "admin")
        cache = self._cache
        if cache is None:
            with self._uows() as uow:
                found = uow.tokens.find(token_digest)
        else:
            began = cache.begin()
            with self._uows() as uow:
                # The counter first: read after the token, it could include a revocation the
                # token read missed, and the stale principal would be stored as current.
                generation = uow.tokens.generation()
                found = uow.tokens.find(token_digest)
            cache.observe(generation, began[1])
        if found is None:
            raise TokenInvalid
        principal = Principal(Role(found[0]), found[1])
        if cache is not None:
            cache.put(token_digest, principal, began, generation)
        return principal

    def _from_license_key(self, key: str) -> Principal:
        with self._uows() as uow:
            license = uow.licenses.find(key)
        if license is None or license.key != key:
            raise LicenseInvalid
        # Keygen's http_license_authenticator: a suspended license is refused on every route.
        if license.suspended:
            raise LicenseSuspended
        if (
            license.terms.expiration_strategy == "REVOKE_ACCESS"
            and license.status(self._clock.now()) is LicenseStatus.EXPIRED
        ):
            raise LicenseExpired
        return Principal(Role.LICENSE, license.id)


def ensure_admin_token(uows: UnitOfWorkFactory, clock: Clock) -> str | None:
    """Create the first admin token when none exists; return its secret (shown once) or None."""
    with uows(write=True) as uow:
        if uow.tokens.any_admin():
            return None
        secret = mint_token(Role.ADMIN)
        uow.tokens.add(new_id(), digest(secret), Role.ADMIN.value, "admin", clock.now())
        uow.commit()
        return secret


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    secret: str  # shown once, in the response that creates it
    role: Role
    bearer_id: str
    created: datetime


def issue_token(uow: UnitOfWork, clock: Clock, role: Role, bearer_id: str) -> IssuedToken:
    """A new token for a product or license, inside the caller's unit of work."""
    token = IssuedToken(new_id(), mint_token(role), role, bearer_id, clock.now())
    uow.tokens.add(token.id, digest(token.secret), role.value, bearer_id, token.created)
    return token
