"""JSON:API request and response documents (Keygen's shapes), separate from the tables.

Requests are strict: a wrong JSON type is a 400 ``TYPE_MISMATCH`` and an unknown key is a 400
``PARAMETER_UNPERMITTED``, as Keygen's typed_params answer them. Each write document builds its
use case's command (``command()``); an attribute it does not send stays ``UNSET`` in a patch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from bridge.api.parsing import Metadata
from bridge.domain.commands import (
    UNSET,
    LicensePatch,
    MachinePatch,
    Maybe,
    NewLicense,
    NewMachine,
    NewPolicy,
    NewProduct,
    PolicyPatch,
    ProductPatch,
)

T = TypeVar("T")

# Timestamps arrive as ISO-8601 strings inside parsed JSON, so they are the one lax type.
Timestamp = Annotated[datetime, Field(strict=False)]
Meta = dict[str, Any]
ID_MAX = 2**63 - 1  # outbox ids are 64-bit


def _row_id(value: int) -> int:
    if not 1 <= value <= ID_MAX:
        raise PydanticCustomError("id_invalid", f"ids must be integers between 1 and {ID_MAX}")
    return value


RowId = Annotated[int, AfterValidator(_row_id)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", alias_generator=to_camel)


class Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def _sent(attributes: BaseModel, name: str, value: T) -> Maybe[T]:
    """``value`` if the request sent the attribute ``name`` (even as null), else ``UNSET``."""
    return value if name in attributes.model_fields_set else UNSET


def _sent_non_null(attributes: BaseModel, name: str, value: T | None) -> Maybe[T]:
    """As ``_sent``, for an attribute that cannot be null: ``null`` leaves it unchanged."""
    return UNSET if value is None else _sent(attributes, name, value)


# Relationships ------------------------------------------------------------------------------
class Identifier(Strict):
    type: str
    id: str


class ToOne(Strict):
    data: Identifier


class PolicyRelationships(Strict):
    product: ToOne


class LicenseRelationships(Strict):
    policy: ToOne


class MachineRelationships(Strict):
    license: ToOne


# Products -----------------------------------------------------------------------------------
class ProductAttributesIn(Strict):
    name: str | None = None
    url: str | None = None
    metadata: Metadata | None = None


class ProductDataIn(Strict):
    type: Literal["products", "product"]
    id: str | None = None
    attributes: ProductAttributesIn = ProductAttributesIn()


class ProductIn(Strict):
    data: ProductDataIn

    def new(self) -> NewProduct:
        a = self.data.attributes
        return NewProduct(name=a.name, url=a.url, metadata=a.metadata)

    def patch(self) -> ProductPatch:
        a = self.data.attributes
        return ProductPatch(
            name=_sent(a, "name", a.name),
            url=_sent(a, "url", a.url),
            metadata=_sent(a, "metadata", a.metadata),
        )


# Policies -----------------------------------------------------------------------------------
class PolicyAttributesIn(Strict):
    name: str | None = None
    max_uses: int | None = None
    max_machines: int | None = None
    max_cores: int | None = None
    floating: bool | None = None
    strict: bool | None = None
    overage_strategy: str | None = None
    protected: bool | None = None
    duration: int | None = None
    heartbeat_duration: int | None = None
    expiration_basis: str | None = None
    expiration_strategy: str | None = None
    require_heartbeat: bool | None = None
    heartbeat_cull_strategy: str | None = None
    heartbeat_resurrection_strategy: str | None = None
    heartbeat_basis: str | None = None
    require_check_in: bool | None = None
    check_in_interval: str | None = None
    check_in_interval_count: int | None = None
    usage_period: Meta | None = None
    metadata: Metadata | None = None


class PolicyCreateAttributesIn(PolicyAttributesIn):
    scheme: str | None = None  # Keygen takes it at creation only


class PolicyCreateData(Strict):
    type: Literal["policies", "policy"]
    attributes: PolicyCreateAttributesIn = PolicyCreateAttributesIn()
    relationships: PolicyRelationships


class PolicyCreate(Strict):
    data: PolicyCreateData

    def command(self) -> NewPolicy:
        a = self.data.attributes
        return NewPolicy(
            product_id=self.data.relationships.product.data.id,
            name=a.name,
            max_uses=a.max_uses,
            max_machines=a.max_machines,
            max_cores=a.max_cores,
            floating=a.floating,
            strict=a.strict,
            overage_strategy=a.overage_strategy,
            protected=a.protected,
            duration=a.duration,
            heartbeat_duration=a.heartbeat_duration,
            expiration_basis=a.expiration_basis,
            expiration_strategy=a.expiration_strategy,
            require_heartbeat=a.require_heartbeat,
            heartbeat_cull_strategy=a.heartbeat_cull_strategy,
            heartbeat_resurrection_strategy=a.heartbeat_resurrection_strategy,
            heartbeat_basis=a.heartbeat_basis,
            require_check_in=a.require_check_in,
            check_in_interval=a.check_in_interval,
            check_in_interval_count=a.check_in_interval_count,
            usage_period=a.usage_period,
            metadata=a.metadata,
            scheme=a.scheme,
        )


class PolicyUpdateData(Strict):
    type: Literal["policies", "policy"]
    id: str | None = None
    attributes: PolicyAttributesIn = PolicyAttributesIn()


class PolicyUpdate(Strict):
    data: PolicyUpdateData

    def command(self) -> PolicyPatch:
        a = self.data.attributes
        return PolicyPatch(
            name=_sent(a, "name", a.name),
            max_uses=_sent(a, "max_uses", a.max_uses),
            max_machines=_sent(a, "max_machines", a.max_machines),
            max_cores=_sent(a, "max_cores", a.max_cores),
            floating=_sent(a, "floating", a.floating),
            strict=_sent(a, "strict", a.strict),
            overage_strategy=_sent(a, "overage_strategy", a.overage_strategy),
            protected=_sent(a, "protected", a.protected),
            duration=_sent(a, "duration", a.duration),
            heartbeat_duration=_sent(a, "heartbeat_duration", a.heartbeat_duration),
            expiration_basis=_sent(a, "expiration_basis", a.expiration_basis),
            expiration_strategy=_sent(a, "expiration_strategy", a.expiration_strategy),
            require_heartbeat=_sent(a, "require_heartbeat", a.require_heartbeat),
            heartbeat_cull_strategy=_sent(a, "heartbeat_cull_strategy", a.heartbeat_cull_strategy),
            heartbeat_resurrection_strategy=_sent(
                a, "heartbeat_resurrection_strategy", a.heartbeat_resurrection_strategy
            ),
            heartbeat_basis=_sent(a, "heartbeat_basis", a.heartbeat_basis),
            require_check_in=_sent(a, "require_check_in", a.require_check_in),
            check_in_interval=_sent(a, "check_in_interval", a.check_in_interval),
            check_in_interval_count=_sent(a, "check_in_interval_count", a.check_in_interval_count),
            usage_period=_sent(a, "usage_period", a.usage_period),
            metadata=_sent(a, "metadata", a.metadata),
        )


# Licenses -----------------------------------------------------------------------------------
_NULL_IS_ABSENT = frozenset({"key", "protected", "suspended"})


class LicenseAttributesIn(Strict):
    """``null`` for ``key``, ``protected`` or ``suspended`` (which have no null state) is taken
    as not sent: a generated key, the policy's protection, not suspended, or no change."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in _NULL_IS_ABSENT}
        return data

    name: str | None = None
    key: str | None = None
    expiry: Timestamp | None = None
    max_uses: int | None = None
    max_machines: int | None = None
    max_cores: int | None = None
    protected: bool | None = None
    suspended: bool | None = None
    usage_period: Meta | None = None
    period_anchor: Timestamp | None = None
    metadata: Metadata | None = None


class LicenseCreateData(Strict):
    type: Literal["licenses", "license"]
    attributes: LicenseAttributesIn = LicenseAttributesIn()
    relationships: LicenseRelationships


class LicenseCreate(Strict):
    data: LicenseCreateData

    def command(self) -> NewLicense:
        a = self.data.attributes
        return NewLicense(
            policy_id=self.data.relationships.policy.data.id,
            name=a.name,
            key=a.key,
            expiry=a.expiry,
            max_uses=a.max_uses,
            max_machines=a.max_machines,
            max_cores=a.max_cores,
            protected=a.protected,
            suspended=a.suspended,
            usage_period=a.usage_period,
            period_anchor=a.period_anchor,
            metadata=a.metadata,
        )


class LicenseUpdateData(Strict):
    type: Literal["licenses", "license"]
    id: str | None = None
    attributes: LicenseAttributesIn = LicenseAttributesIn()


class LicenseUpdate(Strict):
    data: LicenseUpdateData

    def command(self) -> LicensePatch:
        a = self.data.attributes
        return LicensePatch(
            name=_sent(a, "name", a.name),
            key=_sent_non_null(a, "key", a.key),
            expiry=_sent(a, "expiry", a.expiry),
            max_uses=_sent(a, "max_uses", a.max_uses),
            max_machines=_sent(a, "max_machines", a.max_machines),
            max_cores=_sent(a, "max_cores", a.max_cores),
            protected=_sent_non_null(a, "protected", a.protected),
            suspended=_sent_non_null(a, "suspended", a.suspended),
            usage_period=_sent(a, "usage_period", a.usage_period),
            period_anchor=_sent(a, "period_anchor", a.period_anchor),
            metadata=_sent(a, "metadata", a.metadata),
        )


# Machines -----------------------------------------------------------------------------------
class MachineAttributesIn(Strict):
    fingerprint: str | None = None
    cores: int | None = None
    name: str | None = None
    platform: str | None = None
    hostname: str | None = None
    metadata: Metadata | None = None


class MachineCreateData(Strict):
    type: Literal["machines", "machine"]
    attributes: MachineAttributesIn = MachineAttributesIn()
    relationships: MachineRelationships


class MachineCreate(Strict):
    data: MachineCreateData

    def command(self) -> NewMachine:
        a = self.data.attributes
        return NewMachine(
            license_ref=self.data.relationships.license.data.id,
            fingerprint=a.fingerprint,
            cores=a.cores,
            name=a.name,
            platform=a.platform,
            hostname=a.hostname,
            metadata=a.metadata,
        )


class MachineUpdateAttributesIn(Strict):
    """The fingerprint of an activation never changes; everything else may."""

    cores: int | None = None
    name: str | None = None
    platform: str | None = None
    hostname: str | None = None
    metadata: Metadata | None = None


class MachineUpdateData(Strict):
    type: Literal["machines", "machine"]
    id: str | None = None
    attributes: MachineUpdateAttributesIn = MachineUpdateAttributesIn()


class MachineUpdate(Strict):
    data: MachineUpdateData

    def command(self) -> MachinePatch:
        a = self.data.attributes
        return MachinePatch(
            cores=_sent(a, "cores", a.cores),
            name=_sent(a, "name", a.name),
            platform=_sent(a, "platform", a.platform),
            hostname=_sent(a, "hostname", a.hostname),
            metadata=_sent(a, "metadata", a.metadata),
        )


# Usage actions ------------------------------------------------------------------------------
class IncrementMeta(Strict):
    increment: int | None = None


class IncrementIn(Strict):
    meta: IncrementMeta | None = None


class DecrementMeta(Strict):
    decrement: int | None = None


class DecrementIn(Strict):
    meta: DecrementMeta | None = None


class NoParams(Strict):
    """Reset, suspend and reinstate take no parameters."""


class ScopeIn(Strict):
    """Every scope key Keygen's validate actions take (``environment`` is Keygen EE's)."""

    product: str | None = None
    policy: str | None = None
    user: str | None = None
    machine: str | None = None
    fingerprint: str | None = None
    fingerprints: list[str] | None = None
    components: list[str] | None = None
    entitlements: list[str] | None = None
    checksum: str | None = None
    version: str | None = None
    environment: str | None = None


class ValidateMeta(Strict):
    nonce: int | None = None
    scope: ScopeIn | None = None


class ValidateIn(Strict):
    meta: ValidateMeta | None = None


class ValidateKeyMeta(Strict):
    key: str
    nonce: int | None = None
    scope: ScopeIn | None = None


class ValidateKeyIn(Strict):
    meta: ValidateKeyMeta


# Responses ----------------------------------------------------------------------------------
class Links(Out):
    self_: str = Field(alias="self")


class IdentifierOut(Out):
    type: str
    id: str


class RelatedLinks(Out):
    related: str


class RelationshipOut(Out):
    data: IdentifierOut | None
    links: Links | RelatedLinks | None = None


class RelationshipLinksOut(Out):
    """A to-many relationship as Keygen gives it: a link, no linkage."""

    links: RelatedLinks


class MachinesMeta(Out):
    """Keygen's ``relationships.machines.meta`` of a license: its machines' totals (the bridge
    keeps no machine memory or disk, so those are 0, as Keygen shows machines without them)."""

    cores: int
    memory: int
    disk: int
    count: int


class MachinesRelationshipOut(RelationshipLinksOut):
    meta: MachinesMeta


Relationships = dict[str, MachinesRelationshipOut | RelationshipOut | RelationshipLinksOut]


class ProductAttributes(Out):
    """Keygen's product attributes in its serializer's order (no ``permissions``: Keygen shows
    them on its Ent tier only)."""

    name: str
    code: str | None
    distribution_strategy: str
    url: str | None
    platforms: list[str] | None
    metadata: Meta
    created: datetime
    updated: datetime


class ProductResource(Out):
    id: str
    type: Literal["products"] = "products"
    attributes: ProductAttributes
    relationships: Relationships
    links: Links


class PolicyAttributes(Out):
    """Keygen's policy attributes in its serializer's order (the values the bridge's behaviour
    has: see the README's Keygen section), then the bridge's usage period."""

    name: str
    duration: int | None
    strict: bool
    floating: bool
    use_pool: bool
    max_machines: int | None
    max_processes: int | None
    max_users: int | None
    max_cores: int | None
    max_memory: int | None
    max_disk: int | None
    max_uses: int | None
    machine_uniqueness_strategy: str
    machine_matching_strategy: str
    component_uniqueness_strategy: str
    component_matching_strategy: str
    expiration_strategy: str
    expiration_basis: str
    renewal_basis: str
    transfer_strategy: str
    authentication_strategy: str
    machine_leasing_strategy: str
    process_leasing_strategy: str
    overage_strategy: str
    scheme: str | None
    encrypted: bool
    protected: bool
    require_product_scope: bool
    require_policy_scope: bool
    require_machine_scope: bool
    require_fingerprint_scope: bool
    require_components_scope: bool
    require_user_scope: bool
    require_checksum_scope: bool
    require_version_scope: bool
    require_check_in: bool
    check_in_interval: str | None
    check_in_interval_count: int | None
    heartbeat_duration: int | None
    heartbeat_cull_strategy: str
    heartbeat_resurrection_strategy: str
    heartbeat_basis: str
    require_heartbeat: bool
    metadata: Meta
    created: datetime
    updated: datetime
    usage_period: Meta | None


class PolicyResource(Out):
    id: str
    type: Literal["policies"] = "policies"
    attributes: PolicyAttributes
    relationships: Relationships
    links: Links


class LicenseAttributes(Out):
    """Keygen's license attributes in its serializer's order (no ``permissions``: Keygen shows
    them on its Ent tier only), then the bridge's usage period."""

    name: str | None
    key: str
    expiry: datetime | None
    status: str
    uses: int  # the count of the current usage period
    suspended: bool
    scheme: str | None  # the policy's: ED25519_SIGN (signed keys) or null
    encrypted: bool
    strict: bool
    floating: bool
    protected: bool
    version: str | None
    max_machines: int | None
    max_processes: int | None
    max_users: int | None
    max_cores: int | None
    max_memory: int | None
    max_disk: int | None
    max_uses: int | None
    require_heartbeat: bool
    require_check_in: bool
    last_validated: datetime | None
    last_check_in: datetime | None
    next_check_in: datetime | None
    last_check_out: datetime | None
    metadata: Meta
    created: datetime
    updated: datetime
    usage_period: Meta | None  # the effective rule: the license's own, else the policy's
    period_anchor: datetime | None
    period_start: datetime | None
    period_end: datetime | None


class MirrorOut(Out):
    """``meta.mirror`` of a license mirrored from Keygen: its usage is counted by Keygen, and
    its limit is Keygen's ``maxUses``."""

    source: str  # "keygen"
    max_uses: int | None
    mirrored_at: datetime
    deleted_at: datetime | None


class LicenseMetaOut(Out):
    mirror: MirrorOut


class LicenseResource(Out):
    id: str
    type: Literal["licenses"] = "licenses"
    attributes: LicenseAttributes
    relationships: Relationships
    links: Links
    # Resource-level meta, which Keygen's clients ignore: only on a mirrored license.
    meta: LicenseMetaOut | None = Field(default=None, exclude_if=lambda meta: meta is None)


class MachineAttributes(Out):
    """Keygen's machine attributes in its serializer's order."""

    fingerprint: str
    cores: int | None
    memory: int | None
    disk: int | None
    ip: str | None
    hostname: str | None
    platform: str | None
    name: str | None
    require_heartbeat: bool
    heartbeat_status: str
    heartbeat_duration: int | None
    max_processes: int | None
    last_check_out: datetime | None
    last_heartbeat: datetime | None
    next_heartbeat: datetime | None
    metadata: Meta
    created: datetime
    updated: datetime


class MachineResource(Out):
    id: str
    type: Literal["machines"] = "machines"
    attributes: MachineAttributes
    relationships: Relationships
    links: Links


class TokenAttributes(Out):
    kind: str
    token: str
    expiry: datetime | None
    created: datetime


class TokenResource(Out):
    id: str
    type: Literal["tokens"] = "tokens"
    attributes: TokenAttributes
    relationships: dict[str, RelationshipOut]


class UsageEntryAttributes(Out):
    kind: str
    delta: int
    uses_before: int
    uses_after: int
    actor: str
    idempotency_key: str | None
    request_id: str | None
    occurred_at: datetime


class UsageEntryResource(Out):
    id: str
    type: Literal["usage-entries"] = "usage-entries"
    attributes: UsageEntryAttributes
    relationships: dict[str, RelationshipOut]


class PageLinks(Out):
    self_: str = Field(alias="self")
    first: str
    last: str
    prev: str | None
    next: str | None


class PageMeta(Out):
    count: int
    pages: int


class ListMeta(Out):
    pages: PageMeta


class ProductDocument(Out):
    data: ProductResource


class ProductList(Out):
    data: list[ProductResource]
    meta: ListMeta
    links: PageLinks


class PolicyDocument(Out):
    data: PolicyResource


class PolicyList(Out):
    data: list[PolicyResource]
    meta: ListMeta
    links: PageLinks


class LicenseDocument(Out):
    data: LicenseResource


class LicenseList(Out):
    data: list[LicenseResource]
    meta: ListMeta
    links: PageLinks


class MachineDocument(Out):
    data: MachineResource


class MachineList(Out):
    data: list[MachineResource]
    meta: ListMeta
    links: PageLinks


class TokenDocument(Out):
    data: TokenResource


class UsageList(Out):
    data: list[UsageEntryResource]
    meta: ListMeta
    links: PageLinks


class ValidationMetaOut(Out):
    ts: datetime
    valid: bool
    code: str
    detail: str
    nonce: int | None = None
    scope: dict[str, str | list[str] | None] | None = None


class ValidationDocument(Out):
    data: LicenseResource | None
    meta: ValidationMetaOut


class ErrorSource(Out):
    pointer: str | None = None
    parameter: str | None = None


class ErrorObject(Out):
    title: str
    detail: str
    code: str
    source: ErrorSource | None = None


class ErrorMeta(Out):
    id: str | None


class ErrorDocument(Out):
    meta: ErrorMeta
    errors: list[ErrorObject]


class Health(Out):
    status: str


# Outbox -------------------------------------------------------------------------------------
class OutboxStatusAttributes(Out):
    sink: str
    status: str
    count: int
    mapping_missing: int  # of count, items waiting for their license's mapping
    reasons: dict[str, int]  # of count, by reason (bridge.domain.delivery.Reason)
    oldest_created: datetime | None


class OutboxStatusResource(Out):
    id: str
    type: Literal["outbox-statuses"] = "outbox-statuses"
    attributes: OutboxStatusAttributes


class OutboxStatusList(Out):
    data: list[OutboxStatusResource]


class DeadLetterAttributes(Out):
    sink: str
    attempts: int
    reason: str | None
    error: str | None
    entry_id: str
    license_id: str
    kind: str
    delta: int
    occurred_at: datetime


class DeadLetterResource(Out):
    id: str
    type: Literal["dead-letters"] = "dead-letters"
    attributes: DeadLetterAttributes


class DeadLetterList(Out):
    data: list[DeadLetterResource]


class RetryMeta(Strict):
    sink: str | None = None
    ids: list[RowId] | None = None


class RetryIn(Strict):
    meta: RetryMeta | None = None


class RetryMetaOut(Out):
    requeued: int


class RetryOut(Out):
    meta: RetryMetaOut


# Reconciliation -----------------------------------------------------------------------------
class ReconciliationAttributes(Out):
    license_id: str
    sink: str
    period_start: datetime
    period_end: datetime
    status: str
    ledger_total: int
    ledger_count: int
    delivered_total: int
    delivered_count: int
    undelivered_count: int
    platform_total: int | None
    platform_count: int | None
    missing: list[str]
    unknown: list[str]
    repaired: int
    unrepairable: int
    resendable: int
    checked_at: datetime
    late: int = 0  # offline records that arrived after the period closed


class ReconciliationResource(Out):
    id: str
    type: Literal["reconciliations"] = "reconciliations"
    attributes: ReconciliationAttributes


class ReconciliationList(Out):
    data: list[ReconciliationResource]
    meta: ListMeta
    links: PageLinks
