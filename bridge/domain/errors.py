"""The one error tree of the bridge. Every error a client can see is one of these.

Each class carries a permanent upper-snake ``code`` (an API: add codes, never rename them), an
HTTP ``status`` and a JSON:API ``title``. An error about one input names its domain ``Field``;
the API turns the field into a JSON:API source pointer or parameter (``bridge.api.sources``) and
renders the error in exactly one place (``bridge.api.errors``). Codes that Keygen defines keep
Keygen's spelling, detail strings and source pointers; the others are ours.

Every internal error type, these and the others (delivery errors, store conflicts, platform
reads), carries one of two markers: ``Transient`` (trying again later may succeed: 503) or
``Terminal`` (it never will: every 4xx here), so "retry or not" is one ``isinstance`` check.

    BridgeError (500)                   INTERNAL_ERROR           (a bug; never expected)
    ├── BadRequest (400)                BAD_REQUEST
    │   ├── JsonInvalid                 JSON_INVALID
    │   ├── TypeMismatch                TYPE_MISMATCH            (Keygen: no code)
    │   ├── ParameterUnpermitted        PARAMETER_UNPERMITTED    (Keygen: no code)
    │   ├── ParameterMissing            PARAMETER_MISSING
    │   ├── IntegerTooLarge             INTEGER_TOO_LARGE        (Keygen: no code)
    │   ├── IdempotencyKeyInvalid       IDEMPOTENCY_KEY_INVALID
    │   ├── PageInvalid                 PAGE_INVALID
    │   ├── ReconcileWindowInvalid      RECONCILE_WINDOW_INVALID
    │   ├── StringInvalid               STRING_INVALID           (NUL or a lone surrogate)
    │   ├── IdInvalid                   ID_INVALID
    │   ├── AcceptSignatureInvalid      ACCEPT_SIGNATURE_INVALID (Keygen: no code)
    │   ├── UsageBatchTooLarge          USAGE_BATCH_TOO_LARGE    (a check-in's records)
    │   ├── CheckoutTtlInvalid          CHECKOUT_TTL_INVALID
    │   ├── CheckoutAlgorithmInvalid    CHECKOUT_ALGORITHM_INVALID
    │   ├── CheckoutIncludeInvalid      CHECKOUT_INCLUDE_INVALID
    │   └── WebhookPayloadInvalid       WEBHOOK_PAYLOAD_INVALID  (signed, but not a usable event)
    ├── TokenMissing (401)              TOKEN_MISSING
    ├── TokenInvalid (401)              TOKEN_INVALID
    │   └── LicenseInvalid              LICENSE_INVALID          (``License <key>``: no such key)
    ├── WebhookUnverified (401)         WEBHOOK_UNVERIFIED       (base; not sent itself)
    │   ├── WebhookSignatureMissing     WEBHOOK_SIGNATURE_MISSING
    │   ├── WebhookSignatureInvalid     WEBHOOK_SIGNATURE_INVALID
    │   └── WebhookTimestampStale       WEBHOOK_TIMESTAMP_STALE
    ├── AccessDenied (403)              ACCESS_DENIED            (Keygen: no code)
    │   ├── LicenseSuspended            LICENSE_SUSPENDED        (``License <key>`` of a suspended)
    │   └── LicenseExpired              LICENSE_EXPIRED          (... expired, REVOKE_ACCESS)
    ├── NotFound (404)                  NOT_FOUND
    │   ├── RouteNotFound               ROUTE_NOT_FOUND
    │   └── KeygenNotConfigured         KEYGEN_NOT_CONFIGURED    (no ``[keygen]`` account)
    ├── MethodNotAllowed (405)          METHOD_NOT_ALLOWED
    ├── LicenseMirrored (409)           LICENSE_MIRRORED         (its usage is counted by Keygen)
    ├── PayloadTooLarge (413)           PAYLOAD_TOO_LARGE
    ├── ContentTypeUnsupported (415)    CONTENT_TYPE_UNSUPPORTED
    ├── Unprocessable (422)             UNPROCESSABLE            (base; not sent itself)
    │   ├── UsesLimitExceeded           USES_LIMIT_EXCEEDED
    │   ├── UsesInvalid                 USES_INVALID
    │   ├── MaxUsesInvalid              MAX_USES_INVALID
    │   ├── KeyTaken                    KEY_TAKEN
    │   ├── KeyInvalid                  KEY_INVALID
    │   ├── NameMissing                 NAME_MISSING
    │   ├── PolicyNotFound              POLICY_NOT_FOUND
    │   ├── ProductNotFound             PRODUCT_NOT_FOUND
    │   ├── MaxMachinesInvalid          MAX_MACHINES_INVALID
    │   ├── MaxCoresInvalid             MAX_CORES_INVALID
    │   ├── OverageStrategyNotAllowed   OVERAGE_STRATEGY_NOT_ALLOWED
    │   ├── ExpirationBasisNotAllowed   EXPIRATION_BASIS_NOT_ALLOWED
    │   ├── SchemeNotAllowed            SCHEME_NOT_ALLOWED
    │   ├── ExpirationStrategyNotAllowed EXPIRATION_STRATEGY_NOT_ALLOWED
    │   ├── HeartbeatCullStrategyNotAllowed HEARTBEAT_CULL_STRATEGY_NOT_ALLOWED
    │   ├── HeartbeatResurrectionStrategyNotAllowed HEARTBEAT_RESURRECTION_STRATEGY_NOT_ALLOWED
    │   ├── HeartbeatBasisNotAllowed    HEARTBEAT_BASIS_NOT_ALLOWED
    │   ├── DurationInvalid             DURATION_INVALID
    │   ├── ExpiryInvalid               EXPIRY_INVALID
    │   ├── AttributeInvalid            ATTRIBUTE_INVALID
    │   ├── PolicyInUse                 POLICY_IN_USE
    │   ├── LicenseNotFound             LICENSE_NOT_FOUND
    │   ├── MachineLimitExceeded        MACHINE_LIMIT_EXCEEDED
    │   ├── MachineCoreLimitExceeded    MACHINE_CORE_LIMIT_EXCEEDED
    │   ├── CoresInvalid                CORES_INVALID
    │   ├── FingerprintMissing          FINGERPRINT_MISSING
    │   ├── FingerprintTaken            FINGERPRINT_TAKEN
    │   ├── HeartbeatDurationInvalid    HEARTBEAT_DURATION_INVALID
    │   ├── MachineHeartbeatDead        MACHINE_HEARTBEAT_DEAD
    │   ├── ProductInUse                PRODUCT_IN_USE
    │   ├── UsagePeriodInvalid          USAGE_PERIOD_INVALID
    │   ├── PeriodAnchorInvalid         PERIOD_ANCHOR_INVALID
    │   ├── MetadataInvalid             METADATA_INVALID
    │   ├── ValueInvalid                VALUE_INVALID            (the store cannot hold it)
    │   ├── IdempotencyKeyReused        IDEMPOTENCY_KEY_REUSED
    │   ├── CheckInNotRequired          CHECK_IN_NOT_REQUIRED    (Keygen: no code)
    │   ├── CheckInIntervalNotAllowed   CHECK_IN_INTERVAL_NOT_ALLOWED
    │   ├── CheckInIntervalCountNotAllowed CHECK_IN_INTERVAL_COUNT_NOT_ALLOWED
    │   └── UsageRecordRejected         USAGE_RECORD_REJECTED    (base: one record of a check-in,
    │       │                                                     in its result, never the answer)
    │       ├── UsageRecordIdInvalid    USAGE_RECORD_ID_INVALID
    │       ├── UsageRecordIncrementInvalid USAGE_RECORD_INCREMENT_INVALID
    │       ├── UsageRecordTimeInvalid  USAGE_RECORD_TIME_INVALID
    │       ├── UsageRecordInFuture     USAGE_RECORD_IN_FUTURE
    │       ├── UsageRecordBeforeLicense USAGE_RECORD_BEFORE_LICENSE
    │       └── UsageRecordIdConflict   USAGE_RECORD_ID_CONFLICT
    ├── KeygenRefused (424)             KEYGEN_REFUSED           (Keygen's API said no, for good)
    └── ServiceUnavailable (503)        SERVICE_UNAVAILABLE
        ├── SchemaBehind                SCHEMA_BEHIND            (read-only commands)
        ├── SchemaUnknown               SCHEMA_UNKNOWN           (read-only commands)
        └── KeygenUnavailable           KEYGEN_UNAVAILABLE       (Keygen's API: 409, 429, 5xx, down)
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

INT4_MAX = 2_147_483_647


class Field(StrEnum):
    """The input an error is about, by its domain name (the API maps each to its source)."""

    RESOURCE = "resource"  # the resource as a whole
    NAME = "name"
    KEY = "key"
    USES = "uses"
    MAX_USES = "max_uses"
    MAX_MACHINES = "max_machines"
    MAX_CORES = "max_cores"
    OVERAGE_STRATEGY = "overage_strategy"
    EXPIRATION_BASIS = "expiration_basis"
    DURATION = "duration"
    HEARTBEAT_DURATION = "heartbeat_duration"
    EXPIRATION_STRATEGY = "expiration_strategy"
    HEARTBEAT_CULL_STRATEGY = "heartbeat_cull_strategy"
    HEARTBEAT_RESURRECTION_STRATEGY = "heartbeat_resurrection_strategy"
    HEARTBEAT_BASIS = "heartbeat_basis"
    EXPIRY = "expiry"
    USAGE_PERIOD = "usage_period"
    PERIOD_ANCHOR = "period_anchor"
    METADATA = "metadata"
    FINGERPRINT = "fingerprint"
    CORES = "cores"
    PLATFORM = "platform"
    HOSTNAME = "hostname"
    PRODUCT = "product"  # a relationship: the product's id
    POLICY = "policy"
    LICENSE = "license"
    CHECK_IN_INTERVAL = "check_in_interval"
    CHECK_IN_INTERVAL_COUNT = "check_in_interval_count"
    INCREMENT = "increment"  # the amount of a usage action
    DECREMENT = "decrement"
    PAGE = "page"
    IDEMPOTENCY_KEY = "idempotency_key"
    SCHEME = "scheme"
    TTL = "ttl"  # the check-out parameters (query or meta)
    ALGORITHM = "algorithm"
    INCLUDE = "include"


class Transient:
    """Marker of an error that trying again later may cure (an outage, a lost race, a rate
    limit): whether to retry is one ``isinstance(error, Transient)`` check."""


class Terminal:
    """Marker of an error that the same attempt will always meet again (bad input, a refusal
    for good): never retried as is."""


class BridgeError(Exception):
    """Base of every client-visible error."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"
    default_detail: ClassVar[str] = "an unexpected error occurred"
    default_field: ClassVar[Field | None] = None

    def __init__(self, detail: str | None = None, *, field: Field | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        self.field = field if field is not None else self.default_field
        super().__init__(self.detail)


# 400 ----------------------------------------------------------------------------------------
class BadRequest(BridgeError, Terminal):
    status = 400
    title = "Bad request"
    code = "BAD_REQUEST"


class JsonInvalid(BadRequest):
    code = "JSON_INVALID"
    default_detail = "The request body is not valid JSON"


class TypeMismatch(BadRequest):
    code = "TYPE_MISMATCH"


class ParameterUnpermitted(BadRequest):
    code = "PARAMETER_UNPERMITTED"
    default_detail = "unpermitted parameter"


class ParameterMissing(BadRequest):
    code = "PARAMETER_MISSING"
    default_detail = "is missing"


class IntegerTooLarge(BadRequest):
    code = "INTEGER_TOO_LARGE"
    default_detail = "integer is too large"


class IdempotencyKeyInvalid(BadRequest):
    code = "IDEMPOTENCY_KEY_INVALID"
    default_field = Field.IDEMPOTENCY_KEY
    default_detail = "Idempotency-Key must be 1 to 255 printable ASCII characters"


class PageInvalid(BadRequest):
    code = "PAGE_INVALID"
    default_field = Field.PAGE


class ReconcileWindowInvalid(BadRequest):
    code = "RECONCILE_WINDOW_INVALID"
    default_detail = "give a period as YYYY-MM, or from and to as ISO-8601 dates with from < to"


class StringInvalid(BadRequest):
    """Text the store cannot encode: a NUL character or a lone UTF-16 surrogate."""

    code = "STRING_INVALID"
    default_detail = "must be Unicode text without NUL characters or lone surrogates"


class IdInvalid(BadRequest):
    code = "ID_INVALID"
    default_detail = "ids must be integers between 1 and 9223372036854775807"


class AcceptSignatureInvalid(BadRequest):
    """``Keygen-Accept-Signature`` is malformed, names an algorithm the bridge does not sign
    with, or a key id that is not the account's; Keygen's details."""

    code = "ACCEPT_SIGNATURE_INVALID"
    default_detail = "invalid accept-signature header (malformed)"


class UsageBatchTooLarge(BadRequest):
    """A check-in carrying more offline usage records than one request may."""

    code = "USAGE_BATCH_TOO_LARGE"


class CheckoutTtlInvalid(BadRequest):
    code = "CHECKOUT_TTL_INVALID"
    default_field = Field.TTL
    default_detail = "must be greater than or equal to 3600 (1 hour)"


class CheckoutAlgorithmInvalid(BadRequest):
    code = "CHECKOUT_ALGORITHM_INVALID"
    default_field = Field.ALGORITHM


class CheckoutIncludeInvalid(BadRequest):
    code = "CHECKOUT_INCLUDE_INVALID"
    default_field = Field.INCLUDE
    default_detail = "invalid includes"


class WebhookPayloadInvalid(BadRequest):
    """A webhook whose signature is valid but whose body is not an event the bridge can read."""

    code = "WEBHOOK_PAYLOAD_INVALID"
    default_detail = "the webhook body is not a JSON object with an id and a type"


# 401 / 403 / 404 / 405 / 413 / 415 ----------------------------------------------------------
class TokenMissing(BridgeError, Terminal):
    status = 401
    title = "Unauthorized"
    code = "TOKEN_MISSING"
    default_detail = "You must be authenticated to complete the request"


class TokenInvalid(BridgeError, Terminal):
    status = 401
    title = "Unauthorized"
    code = "TOKEN_INVALID"
    default_detail = "Token format is invalid or the token does not exist"


class LicenseInvalid(TokenInvalid):
    """``License <key>`` with no such key (Keygen's detail is its generic one)."""

    code = "LICENSE_INVALID"
    default_detail = "You must be authenticated to complete the request"


class WebhookUnverified(BridgeError, Terminal):
    """A webhook delivery that cannot be trusted: nothing is stored or changed."""

    status = 401
    title = "Unauthorized"
    code = "WEBHOOK_UNVERIFIED"
    default_detail = "the webhook delivery could not be verified"


class WebhookSignatureMissing(WebhookUnverified):
    code = "WEBHOOK_SIGNATURE_MISSING"
    default_detail = "the webhook delivery is not signed"


class WebhookSignatureInvalid(WebhookUnverified):
    code = "WEBHOOK_SIGNATURE_INVALID"
    default_detail = "the webhook signature does not match the body"


class WebhookTimestampStale(WebhookUnverified):
    code = "WEBHOOK_TIMESTAMP_STALE"
    default_detail = "the signed timestamp is outside the accepted window"


class AccessDenied(BridgeError, Terminal):
    status = 403
    title = "Access denied"
    code = "ACCESS_DENIED"
    default_detail = "You do not have permission to complete the request"


class LicenseSuspended(AccessDenied):
    """``License <key>`` of a suspended license: Keygen refuses the bearer on every route."""

    code = "LICENSE_SUSPENDED"
    default_detail = "License is suspended"


class LicenseExpired(AccessDenied):
    """``License <key>`` of an expired license whose policy revokes access (REVOKE_ACCESS)."""

    code = "LICENSE_EXPIRED"
    default_detail = "License is expired"


class NotFound(BridgeError, Terminal):
    status = 404
    title = "Not found"
    code = "NOT_FOUND"
    default_detail = "The requested resource was not found"

    @classmethod
    def resource(cls, kind: str, ident: str) -> NotFound:
        """Keygen's wording: ``The requested license 'abc' was not found``."""
        return cls(f"The requested {kind} '{ident}' was not found")


class RouteNotFound(NotFound):
    code = "ROUTE_NOT_FOUND"
    default_detail = "The requested endpoint was not found"


class MethodNotAllowed(BridgeError, Terminal):
    status = 405
    title = "Method not allowed"
    code = "METHOD_NOT_ALLOWED"
    default_detail = "The requested method is not allowed on this endpoint"


class PayloadTooLarge(BridgeError, Terminal):
    status = 413
    title = "Payload too large"
    code = "PAYLOAD_TOO_LARGE"


class ContentTypeUnsupported(BridgeError, Terminal):
    status = 415
    title = "Unsupported media type"
    code = "CONTENT_TYPE_UNSUPPORTED"
    default_detail = "Content-Type must be application/vnd.api+json or application/json"


# 422 ----------------------------------------------------------------------------------------
class Unprocessable(BridgeError, Terminal):
    status = 422
    title = "Unprocessable resource"
    code = "UNPROCESSABLE"


class UsesLimitExceeded(Unprocessable):
    code = "USES_LIMIT_EXCEEDED"
    default_field = Field.USES

    @classmethod
    def for_max(cls, max_uses: int) -> UsesLimitExceeded:
        return cls(f"usage exceeds maximum allowed for license ({max_uses})")


class UsesInvalid(Unprocessable):
    code = "USES_INVALID"
    default_field = Field.USES
    default_detail = "must be greater than or equal to 0"


class MaxUsesInvalid(Unprocessable):
    code = "MAX_USES_INVALID"
    default_field = Field.MAX_USES


class KeyTaken(Unprocessable):
    code = "KEY_TAKEN"
    default_field = Field.KEY
    default_detail = "has already been taken"


class KeyInvalid(Unprocessable):
    code = "KEY_INVALID"
    default_field = Field.KEY


class NameMissing(Unprocessable):
    code = "NAME_MISSING"
    default_field = Field.NAME
    default_detail = "can't be blank"


class PolicyNotFound(Unprocessable):
    code = "POLICY_NOT_FOUND"
    default_field = Field.POLICY
    default_detail = "must exist"


class ProductNotFound(Unprocessable):
    code = "PRODUCT_NOT_FOUND"
    default_field = Field.PRODUCT
    default_detail = "must exist"


class MaxMachinesInvalid(Unprocessable):
    code = "MAX_MACHINES_INVALID"
    default_field = Field.MAX_MACHINES


class MaxCoresInvalid(Unprocessable):
    code = "MAX_CORES_INVALID"
    default_field = Field.MAX_CORES


class OverageStrategyNotAllowed(Unprocessable):
    code = "OVERAGE_STRATEGY_NOT_ALLOWED"
    default_field = Field.OVERAGE_STRATEGY
    default_detail = "unsupported overage strategy"


class SchemeNotAllowed(Unprocessable):
    code = "SCHEME_NOT_ALLOWED"
    default_field = Field.SCHEME
    default_detail = "unsupported signing scheme"


class ExpirationBasisNotAllowed(Unprocessable):
    code = "EXPIRATION_BASIS_NOT_ALLOWED"
    default_field = Field.EXPIRATION_BASIS
    default_detail = "must be one of: FROM_CREATION, FROM_FIRST_USE"


class ExpirationStrategyNotAllowed(Unprocessable):
    code = "EXPIRATION_STRATEGY_NOT_ALLOWED"
    default_field = Field.EXPIRATION_STRATEGY
    default_detail = "unsupported expiration strategy"


class HeartbeatCullStrategyNotAllowed(Unprocessable):
    code = "HEARTBEAT_CULL_STRATEGY_NOT_ALLOWED"
    default_field = Field.HEARTBEAT_CULL_STRATEGY
    default_detail = "unsupported heartbeat cull strategy"


class HeartbeatResurrectionStrategyNotAllowed(Unprocessable):
    code = "HEARTBEAT_RESURRECTION_STRATEGY_NOT_ALLOWED"
    default_field = Field.HEARTBEAT_RESURRECTION_STRATEGY
    default_detail = "unsupported heartbeat resurrection strategy"


class HeartbeatBasisNotAllowed(Unprocessable):
    code = "HEARTBEAT_BASIS_NOT_ALLOWED"
    default_field = Field.HEARTBEAT_BASIS
    default_detail = "unsupported heartbeat basis"


class MachineHeartbeatDead(Unprocessable):
    """A ping of a dead machine its policy does not resurrect (Keygen's answer)."""

    code = "MACHINE_HEARTBEAT_DEAD"
    default_field = Field.RESOURCE
    default_detail = "is dead"


class DurationInvalid(Unprocessable):
    code = "DURATION_INVALID"
    default_field = Field.DURATION


class ExpiryInvalid(Unprocessable):
    code = "EXPIRY_INVALID"
    default_field = Field.EXPIRY


class AttributeInvalid(Unprocessable):
    code = "ATTRIBUTE_INVALID"


class PolicyInUse(Unprocessable):
    code = "POLICY_IN_USE"
    default_field = Field.RESOURCE
    default_detail = "policy still has licenses; delete or move them first"


class ProductInUse(Unprocessable):
    code = "PRODUCT_IN_USE"
    default_field = Field.RESOURCE
    default_detail = "product still has policies; delete them first"


class UsagePeriodInvalid(Unprocessable):
    code = "USAGE_PERIOD_INVALID"
    default_field = Field.USAGE_PERIOD


class PeriodAnchorInvalid(Unprocessable):
    code = "PERIOD_ANCHOR_INVALID"
    default_field = Field.PERIOD_ANCHOR
    default_detail = "must be a date-time with a timezone offset"


class MetadataInvalid(Unprocessable):
    code = "METADATA_INVALID"
    default_field = Field.METADATA


class ValueInvalid(Unprocessable):
    """A value the validation let through but the store refused (out of its range, or against
    one of its constraints); the transaction was rolled back."""

    code = "VALUE_INVALID"
    default_detail = "a value is outside what the store can hold"


class LicenseNotFound(Unprocessable):
    code = "LICENSE_NOT_FOUND"
    default_field = Field.LICENSE
    default_detail = "must exist"


class MachineLimitExceeded(Unprocessable):
    code = "MACHINE_LIMIT_EXCEEDED"
    default_field = Field.RESOURCE

    @classmethod
    def for_max(cls, max_machines: int) -> MachineLimitExceeded:
        return cls(f"machine count has exceeded maximum allowed for license ({max_machines})")


class MachineCoreLimitExceeded(Unprocessable):
    code = "MACHINE_CORE_LIMIT_EXCEEDED"
    default_field = Field.RESOURCE

    @classmethod
    def for_max(cls, max_cores: int) -> MachineCoreLimitExceeded:
        return cls(f"machine core count has exceeded maximum allowed for license ({max_cores})")


class CoresInvalid(Unprocessable):
    code = "CORES_INVALID"
    default_field = Field.CORES


class FingerprintMissing(Unprocessable):
    code = "FINGERPRINT_MISSING"
    default_field = Field.FINGERPRINT
    default_detail = "can't be blank"


class FingerprintTaken(Unprocessable):
    code = "FINGERPRINT_TAKEN"
    default_field = Field.FINGERPRINT
    default_detail = "has already been taken"


class HeartbeatDurationInvalid(Unprocessable):
    code = "HEARTBEAT_DURATION_INVALID"
    default_field = Field.HEARTBEAT_DURATION


class IdempotencyKeyReused(Unprocessable):
    code = "IDEMPOTENCY_KEY_REUSED"
    default_detail = (
        "Idempotency-Key was already used for a different request; use a new key per request"
    )


class KeygenNotConfigured(NotFound):
    """A Keygen command or route without a ``[keygen]`` account configured."""

    code = "KEYGEN_NOT_CONFIGURED"
    default_detail = "no Keygen account is configured: set [keygen] account_id and public_key"


class CheckInNotRequired(Unprocessable):
    """A check-in of a license whose policy does not require check-ins (Keygen's answer)."""

    code = "CHECK_IN_NOT_REQUIRED"
    title = "Unprocessable entity"
    default_detail = "cannot be checked in because the policy does not require it"


class CheckInIntervalNotAllowed(Unprocessable):
    code = "CHECK_IN_INTERVAL_NOT_ALLOWED"
    default_field = Field.CHECK_IN_INTERVAL
    default_detail = "must be one of: day, week, month, year"


class CheckInIntervalCountNotAllowed(Unprocessable):
    code = "CHECK_IN_INTERVAL_COUNT_NOT_ALLOWED"
    default_field = Field.CHECK_IN_INTERVAL_COUNT
    default_detail = "must be a number between 1 and 365 inclusive"


class UsageRecordRejected(Unprocessable):
    """Base of the refusals of one offline usage record: reported in the check-in's per-record
    results (``meta.usage``), never as the whole request's answer. Not sent itself."""

    code = "USAGE_RECORD_REJECTED"


class UsageRecordIdInvalid(UsageRecordRejected):
    code = "USAGE_RECORD_ID_INVALID"
    default_detail = "must be a UUID"


class UsageRecordIncrementInvalid(UsageRecordRejected):
    code = "USAGE_RECORD_INCREMENT_INVALID"
    default_detail = f"must be an integer between 1 and {INT4_MAX}"


class UsageRecordTimeInvalid(UsageRecordRejected):
    code = "USAGE_RECORD_TIME_INVALID"
    default_detail = (
        "must be an ISO-8601 date-time with a timezone offset between 1900-01-01 and 9000-01-01"
    )


class UsageRecordInFuture(UsageRecordRejected):
    code = "USAGE_RECORD_IN_FUTURE"


class UsageRecordBeforeLicense(UsageRecordRejected):
    code = "USAGE_RECORD_BEFORE_LICENSE"
    default_detail = "is before the license was created"


class UsageRecordIdConflict(UsageRecordRejected):
    code = "USAGE_RECORD_ID_CONFLICT"
    default_detail = "was already used for a different usage record"


# 409 ----------------------------------------------------------------------------------------
class LicenseMirrored(BridgeError, Terminal):
    """A usage action or a check-in's usage records on a license mirrored from Keygen: its
    usage is counted by Keygen (the relay applies what Keygen reports), so a change made here
    would count beside Keygen's. Refused before any write."""

    status = 409
    title = "Conflict"
    code = "LICENSE_MIRRORED"
    default_detail = (
        "usage of this license is counted by Keygen (it is mirrored from a Keygen account): "
        "change it in Keygen, not through the bridge"
    )


# 424 ----------------------------------------------------------------------------------------
class KeygenRefused(BridgeError, Terminal):
    """Keygen's API refused a call for good (a 4xx other than 409 and 429); ``upstream``
    is Keygen's status and the detail carries Keygen's first error."""

    status = 424
    title = "Failed dependency"
    code = "KEYGEN_REFUSED"
    default_detail = "Keygen refused the request"

    def __init__(self, detail: str | None = None, *, upstream: int = 0) -> None:
        super().__init__(detail)
        self.upstream = upstream


# 503 ----------------------------------------------------------------------------------------
class ServiceUnavailable(BridgeError, Transient):
    status = 503
    title = "Service unavailable"
    code = "SERVICE_UNAVAILABLE"
    default_detail = "The store is temporarily unavailable; retry with the same Idempotency-Key"


class SchemaBehind(ServiceUnavailable):
    """The database is not migrated to this version's schema (read-only commands never
    migrate; ``meterbridge db upgrade`` does)."""

    code = "SCHEMA_BEHIND"
    default_detail = "the database schema is behind this version: run `meterbridge db upgrade`"


class SchemaUnknown(ServiceUnavailable):
    """The database was migrated by a newer version than this one."""

    code = "SCHEMA_UNKNOWN"
    default_detail = "the database schema is newer than this version"


class KeygenUnavailable(ServiceUnavailable):
    """Keygen's API cannot answer now (down, 5xx, 409 under contention, 429 rate limited);
    ``retry_after`` is the seconds Keygen asked to wait, if it said."""

    code = "KEYGEN_UNAVAILABLE"
    default_detail = "Keygen's API is unavailable; try again later"

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def all_error_classes() -> list[type[BridgeError]]:
    """Every concrete error class, for documentation and the uniqueness test."""
    seen: list[type[BridgeError]] = []
    stack: list[type[BridgeError]] = [BridgeError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
