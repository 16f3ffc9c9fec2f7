"""Domain objects to JSON:API documents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic_core import to_json

from bridge.api import schemas as s
from bridge.domain.model import License, Machine, Policy, Product, UsageEntry
from bridge.service.auth import IssuedToken
from bridge.service.common import Page

JSONAPI = "application/vnd.api+json"
_LICENSE_TO_MANY = ("users", "machines", "tokens", "entitlements")
# Keygen policy settings the bridge has no input for, at the values its behaviour has: Keygen's
# defaults, except authentication (the bridge takes both license keys and tokens: MIXED). It has
# no scope requirements, pools, processes or components (the README's Keygen section).
KEYGEN_POLICY_CONSTANTS: dict[str, Any] = {
    "machine_uniqueness_strategy": "UNIQUE_PER_LICENSE",
    "machine_matching_strategy": "MATCH_ANY",
    "component_uniqueness_strategy": "UNIQUE_PER_MACHINE",
    "component_matching_strategy": "MATCH_ANY",
    "renewal_basis": "FROM_EXPIRY",
    "transfer_strategy": "KEEP_EXPIRY",
    "authentication_strategy": "MIXED",
    "machine_leasing_strategy": "PER_LICENSE",
    "process_leasing_strategy": "PER_MACHINE",
    "require_product_scope": False,
    "require_policy_scope": False,
    "require_machine_scope": False,
    "require_fingerprint_scope": False,
    "require_components_scope": False,
    "require_user_scope": False,
    "require_checksum_scope": False,
    "require_version_scope": False,
}
T = TypeVar("T")


class JsonApiResponse(JSONResponse):
    media_type = JSONAPI


def respond(document: BaseModel, status: int = 200) -> JsonApiResponse:
    return JsonApiResponse(document.model_dump(mode="json", by_alias=True), status_code=status)


class RenderedJson(Generic[T]):
    """As ``Rendered``, for a document built as plain data and encoded once (the ``*_json``
    methods of ``Renderer``): a hot write's answer, without the models' validation."""

    def __init__(self, build: Callable[[T], bytes], status: int = 200) -> None:
        self._build = build
        self._status = status
        self._response: Response | None = None

    def __call__(self, value: T) -> None:
        self._response = Response(self._build(value), self._status, media_type=JSONAPI)

    @property
    def response(self) -> Response:
        assert self._response is not None, "the use case did not render its answer"
        return self._response


def _to_one_json(owner: str, name: str, kind: str, ident: str | None) -> dict[str, Any]:
    """``Renderer._to_one`` as plain data."""
    data = {"type": kind, "id": ident} if ident is not None else None
    return {"data": data, "links": {"related": f"{owner}/{name}"}}


def _to_many_json(owner: str, name: str) -> dict[str, Any]:
    """``Renderer._to_many`` as plain data."""
    return {"links": {"related": f"{owner}/{name}"}}


class Rendered(Generic[T]):
    """A write's response, rendered by its use case inside the transaction, just before the
    commit (the use case's ``answer``): a response that cannot be rendered or encoded fails
    the request and rolls the change back, so no error answer ever follows a commit."""

    def __init__(self, build: Callable[[T], BaseModel], status: int = 200) -> None:
        self._build = build
        self._status = status
        self._response: JsonApiResponse | None = None

    def __call__(self, value: T) -> None:
        self._response = respond(self._build(value), self._status)

    @property
    def response(self) -> JsonApiResponse:
        assert self._response is not None, "the use case did not render its answer"
        return self._response


class Renderer:
    """Builds documents whose links point under ``/v1/accounts/{account}``."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.base = f"/v1/accounts/{account}"

    def _rel(self, kind: str, ident: str) -> s.RelationshipOut:
        return s.RelationshipOut(
            data=s.IdentifierOut(type=kind, id=ident),
            links=s.Links(self_=f"{self.base}/{kind}/{ident}"),
        )

    def _to_one(self, owner: str, name: str, kind: str, ident: str | None) -> s.RelationshipOut:
        """Keygen's to-one relationship: linkage (null when unset) and a ``related`` link under
        the owner's path (``owner`` is e.g. ``licenses/<id>``)."""
        data = s.IdentifierOut(type=kind, id=ident) if ident is not None else None
        return s.RelationshipOut(data=data, links=s.RelatedLinks(related=f"{owner}/{name}"))

    def _to_many(self, owner: str, name: str) -> s.RelationshipLinksOut:
        return s.RelationshipLinksOut(links=s.RelatedLinks(related=f"{owner}/{name}"))

    def _account(self) -> s.RelationshipOut:
        return s.RelationshipOut(
            data=s.IdentifierOut(type="accounts", id=self.account),
            links=s.RelatedLinks(related=self.base),
        )

    def product(self, p: Product) -> s.ProductResource:
        own = f"{self.base}/products/{p.id}"
        many = ("policies", "licenses", "machines", "users", "tokens", "platforms", "channels")
        return s.ProductResource(
            id=p.id,
            attributes=s.ProductAttributes(
                name=p.name,
                code=None,
                distribution_strategy="LICENSED",  # Keygen's default; the bridge has no releases
                url=p.url,
                platforms=None,
                metadata=p.metadata,
                created=p.created,
                updated=p.updated,
            ),
            relationships={"account": self._account()}
            | {name: self._to_many(own, name) for name in (*many, "releases", "artifacts")},
            links=s.Links(self_=own),
        )

    def policy(self, p: Policy) -> s.PolicyResource:
        own = f"{self.base}/policies/{p.id}"
        return s.PolicyResource(
            id=p.id,
            attributes=s.PolicyAttributes(
                name=p.name,
                duration=p.duration,
                strict=p.strict,
                floating=p.floating,
                use_pool=False,
                max_machines=p.max_machines,
                max_processes=None,
                max_users=None,
                max_cores=p.max_cores,
                max_memory=None,
                max_disk=None,
                max_uses=p.max_uses,
                **KEYGEN_POLICY_CONSTANTS,
                expiration_basis=p.expiration_basis.value,
                overage_strategy=p.overage_strategy.value,
                scheme=p.scheme,
                encrypted=False,
                protected=p.protected,
                require_check_in=p.require_check_in,
                check_in_interval=p.check_in_interval,
                check_in_interval_count=p.check_in_interval_count,
                heartbeat_duration=p.heartbeat_duration,
                heartbeat_cull_strategy=p.heartbeat_cull_strategy,
                heartbeat_resurrection_strategy=p.heartbeat_resurrection_strategy,
                heartbeat_basis=p.heartbeat_basis,
                require_heartbeat=p.require_heartbeat,
                expiration_strategy=p.expiration_strategy,
                metadata=p.metadata,
                created=p.created,
                updated=p.updated,
                usage_period=p.usage_period.to_api() if p.usage_period else None,
            ),
            relationships={
                "account": self._account(),
                "product": self._to_one(own, "product", "products", p.product_id),
                "pool": self._to_one(own, "pool", "keys", None),
                "licenses": self._to_many(own, "licenses"),
                "entitlements": self._to_many(own, "entitlements"),
            },
            links=s.Links(self_=own),
        )

    def license(self, lic: License, now: datetime) -> s.LicenseResource:
        lic = lic.current(now)
        terms = lic.terms
        own = f"{self.base}/licenses/{lic.id}"
        return s.LicenseResource(
            id=lic.id,
            attributes=s.LicenseAttributes(
                name=lic.name,
                key=lic.key,
                expiry=lic.expiry,
                status=lic.status(now).value,
                uses=lic.uses,
                suspended=lic.suspended,
                scheme=terms.scheme,
                encrypted=False,
                strict=terms.strict,
                floating=terms.floating,
                protected=lic.protected,
                version=None,
                max_machines=terms.max_machines,
                max_processes=None,
                max_users=None,
                max_cores=terms.max_cores,
                max_memory=None,
                max_disk=None,
                max_uses=terms.max_uses,
                require_heartbeat=terms.require_heartbeat,
                require_check_in=terms.require_check_in,
                last_validated=lic.last_validated,
                last_check_in=lic.last_check_in,
                next_check_in=lic.next_check_in,
                last_check_out=lic.last_check_out,
                metadata=lic.metadata,
                created=lic.created,
                updated=lic.updated,
                usage_period=terms.usage_period.to_api() if terms.usage_period else None,
                period_anchor=lic.period_anchor,
                period_start=lic.period_start,
                period_end=lic.period_end,
            ),
            relationships={
                "account": self._account(),
                "product": self._to_one(own, "product", "products", lic.product_id),
                "policy": self._to_one(own, "policy", "policies", lic.policy_id),
                "group": self._to_one(own, "group", "groups", None),
                "owner": self._to_one(own, "owner", "users", None),
            }
            | {name: self._to_many(own, name) for name in _LICENSE_TO_MANY}
            | {"machines": self._machines(own, lic)},
            links=s.Links(self_=own),
            meta=self._license_meta(lic),
        )

    def _account_json(self) -> dict[str, Any]:
        """``_account`` as plain data."""
        return {"data": {"type": "accounts", "id": self.account}, "links": {"related": self.base}}

    def _license_meta(self, lic: License) -> s.LicenseMetaOut | None:
        mark = lic.mirror
        if mark is None:
            return None
        mirror = s.MirrorOut(
            source=mark.source,
            max_uses=mark.max_uses,
            mirrored_at=mark.mirrored_at,
            deleted_at=mark.deleted_at,
        )
        return s.LicenseMetaOut(mirror=mirror)

    def license_json(self, lic: License, now: datetime) -> bytes:
        """``LicenseDocument(data=self.license(lic, now))`` as the response body, built as plain
        data and encoded once, without the models' validation: the usage actions' hot path
        (``bridge.api.fast_usage``). ``tests/test_fast_usage.py`` holds the two equal."""
        lic = lic.current(now)
        terms = lic.terms
        own = f"{self.base}/licenses/{lic.id}"
        period = terms.usage_period
        attributes = {
            "name": lic.name,
            "key": lic.key,
            "expiry": lic.expiry,
            "status": lic.status(now).value,
            "uses": lic.uses,
            "suspended": lic.suspended,
            "scheme": terms.scheme,
            "encrypted": False,
            "strict": terms.strict,
            "floating": terms.floating,
            "protected": lic.protected,
            "version": None,
            "maxMachines": terms.max_machines,
            "maxProcesses": None,
            "maxUsers": None,
            "maxCores": terms.max_cores,
            "maxMemory": None,
            "maxDisk": None,
            "maxUses": terms.max_uses,
            "requireHeartbeat": terms.require_heartbeat,
            "requireCheckIn": terms.require_check_in,
            "lastValidated": lic.last_validated,
            "lastCheckIn": lic.last_check_in,
            "nextCheckIn": lic.next_check_in,
            "lastCheckOut": lic.last_check_out,
            "metadata": lic.metadata,
            "created": lic.created,
            "updated": lic.updated,
            "usagePeriod": period.to_api() if period else None,
            "periodAnchor": lic.period_anchor,
            "periodStart": lic.period_start,
            "periodEnd": lic.period_end,
        }

        relationships: dict[str, Any] = {
            "account": self._account_json(),
            "product": _to_one_json(own, "product", "products", lic.product_id),
            "policy": _to_one_json(own, "policy", "policies", lic.policy_id),
            "group": _to_one_json(own, "group", "groups", None),
            "owner": _to_one_json(own, "owner", "users", None),
        }
        for name in _LICENSE_TO_MANY:
            relationships[name] = _to_many_json(own, name)
        relationships["machines"] = {
            "links": {"related": f"{own}/machines"},
            "meta": {
                "cores": lic.machines_cores,
                "memory": 0,
                "disk": 0,
                "count": lic.machines_count,
            },
        }
        resource = {
            "id": lic.id,
            "type": "licenses",
            "attributes": attributes,
            "relationships": relationships,
            "links": {"self": own},
        }
        mark = lic.mirror
        if mark is not None:
            resource["meta"] = {
                "mirror": {
                    "source": mark.source,
                    "maxUses": mark.max_uses,
                    "mirroredAt": mark.mirrored_at,
                    "deletedAt": mark.deleted_at,
                }
            }
        return to_json({"data": resource})

    def _machines(self, owner: str, lic: License) -> s.MachinesRelationshipOut:
        meta = s.MachinesMeta(cores=lic.machines_cores, memory=0, disk=0, count=lic.machines_count)
        return s.MachinesRelationshipOut(
            links=s.RelatedLinks(related=f"{owner}/machines"), meta=meta
        )

    def machine(self, m: Machine, now: datetime) -> s.MachineResource:
        own = f"{self.base}/machines/{m.id}"
        return s.MachineResource(
            id=m.id,
            attributes=s.MachineAttributes(
                fingerprint=m.fingerprint,
                cores=m.cores,
                memory=None,
                disk=None,
                ip=None,
                hostname=m.hostname,
                platform=m.platform,
                name=m.name,
                require_heartbeat=m.requires_heartbeat,
                heartbeat_status=m.heartbeat_status(now),
                heartbeat_duration=m.heartbeat.duration,
                max_processes=None,
                last_check_out=m.last_check_out,
                last_heartbeat=m.last_heartbeat,
                next_heartbeat=m.next_heartbeat,
                metadata=m.metadata,
                created=m.created,
                updated=m.updated,
            ),
            relationships={
                "account": self._account(),
                "product": self._to_one(own, "product", "products", m.product_id),
                "group": self._to_one(own, "group", "groups", None),
                "license": self._to_one(own, "license", "licenses", m.license_id),
                "owner": self._to_one(own, "owner", "users", None),
                "components": self._to_many(own, "components"),
                "processes": self._to_many(own, "processes"),
            },
            links=s.Links(self_=own),
        )

    def machine_json(self, m: Machine, now: datetime) -> bytes:
        """``MachineDocument(data=self.machine(m, now))`` as the response body, built as plain
        data and encoded once, as ``license_json``: a machine activation's answer.
        ``tests/test_machine_render.py`` holds the two equal."""
        own = f"{self.base}/machines/{m.id}"
        attributes = {
            "fingerprint": m.fingerprint,
            "cores": m.cores,
            "memory": None,
            "disk": None,
            "ip": None,
            "hostname": m.hostname,
            "platform": m.platform,
            "name": m.name,
            "requireHeartbeat": m.requires_heartbeat,
            "heartbeatStatus": m.heartbeat_status(now),
            "heartbeatDuration": m.heartbeat.duration,
            "maxProcesses": None,
            "lastCheckOut": m.last_check_out,
            "lastHeartbeat": m.last_heartbeat,
            "nextHeartbeat": m.next_heartbeat,
            "metadata": m.metadata,
            "created": m.created,
            "updated": m.updated,
        }
        relationships = {
            "account": self._account_json(),
            "product": _to_one_json(own, "product", "products", m.product_id),
            "group": _to_one_json(own, "group", "groups", None),
            "license": _to_one_json(own, "license", "licenses", m.license_id),
            "owner": _to_one_json(own, "owner", "users", None),
            "components": _to_many_json(own, "components"),
            "processes": _to_many_json(own, "processes"),
        }
        resource = {
            "id": m.id,
            "type": "machines",
            "attributes": attributes,
            "relationships": relationships,
            "links": {"self": own},
        }
        return to_json({"data": resource})

    def token(self, t: IssuedToken) -> s.TokenResource:
        kind = {"product": "product-token", "license": "activation-token"}.get(t.role, t.role)
        bearer = "products" if t.role == "product" else "licenses"
        return s.TokenResource(
            id=t.id,
            attributes=s.TokenAttributes(kind=kind, token=t.secret, expiry=None, created=t.created),
            relationships={"bearer": self._rel(bearer, t.bearer_id)},
        )

    def usage_entry(self, e: UsageEntry) -> s.UsageEntryResource:
        return s.UsageEntryResource(
            id=e.id,
            attributes=s.UsageEntryAttributes(
                kind=e.kind.value,
                delta=e.delta,
                uses_before=e.uses_before,
                uses_after=e.uses_after,
                actor=e.actor,
                idempotency_key=e.idempotency_key,
                request_id=e.request_id,
                occurred_at=e.occurred_at,
            ),
            relationships={"license": self._rel("licenses", e.license_id)}
            | ({"machine": self._rel("machines", e.machine_id)} if e.machine_id else {}),
        )

    def page(
        self,
        page: Page[T],
        path: str,
        render: Callable[[T], Any],
        extra: dict[str, str] | None = None,
    ) -> tuple[list[Any], s.ListMeta, s.PageLinks]:
        def link(number: int) -> str:
            query = {
                **(extra or {}),
                "page[number]": str(number),
                "page[size]": str(page.request.size),
            }
            return f"{self.base}{path}?{urlencode(query)}"

        current, last = page.request.number, page.last
        links = s.PageLinks(
            self_=link(current),
            first=link(1),
            last=link(last),
            prev=link(current - 1) if current > 1 else None,
            next=link(current + 1) if current < last else None,
        )
        data: Sequence[Any] = [render(item) for item in page.items]
        return list(data), s.ListMeta(pages=s.PageMeta(count=page.total, pages=last)), links
