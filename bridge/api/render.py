"""Domain objects to JSON:API documents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bridge.api import schemas as s
from bridge.domain.model import License, Machine, Policy, Product, UsageEntry
from bridge.service.auth import IssuedToken
from bridge.service.common import Page

JSONAPI = "application/vnd.api+json"
T = TypeVar("T")


class JsonApiResponse(JSONResponse):
    media_type = JSONAPI


def respond(document: BaseModel, status: int = 200) -> JsonApiResponse:
    return JsonApiResponse(document.model_dump(mode="json", by_alias=True), status_code=status)


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
        self.base = f"/v1/accounts/{account}"

    def _rel(self, kind: str, ident: str) -> s.RelationshipOut:
        return s.RelationshipOut(
            data=s.IdentifierOut(type=kind, id=ident),
            links=s.Links(self_=f"{self.base}/{kind}/{ident}"),
        )

    def product(self, p: Product) -> s.ProductResource:
        return s.ProductResource(
            id=p.id,
            attributes=s.ProductAttributes(
                name=p.name, url=p.url, metadata=p.metadata, created=p.created, updated=p.updated
            ),
            links=s.Links(self_=f"{self.base}/products/{p.id}"),
        )

    def policy(self, p: Policy) -> s.PolicyResource:
        return s.PolicyResource(
            id=p.id,
            attributes=s.PolicyAttributes(
                name=p.name,
                max_uses=p.max_uses,
                max_machines=p.max_machines,
                max_cores=p.max_cores,
                floating=p.floating,
                strict=p.strict,
                overage_strategy=p.overage_strategy.value,
                protected=p.protected,
                duration=p.duration,
                heartbeat_duration=p.heartbeat_duration,
                expiration_basis=p.expiration_basis.value,
                usage_period=p.usage_period.to_api() if p.usage_period else None,
                metadata=p.metadata,
                created=p.created,
                updated=p.updated,
            ),
            relationships={"product": self._rel("products", p.product_id)},
            links=s.Links(self_=f"{self.base}/policies/{p.id}"),
        )

    def license(self, lic: License, now: datetime) -> s.LicenseResource:
        lic = lic.current(now)
        rule = lic.usage_period
        return s.LicenseResource(
            id=lic.id,
            attributes=s.LicenseAttributes(
                name=lic.name,
                key=lic.key,
                expiry=lic.expiry,
                status=lic.status(now).value,
                uses=lic.uses,
                max_uses=lic.max_uses,
                max_machines=lic.max_machines,
                max_cores=lic.max_cores,
                protected=lic.protected,
                suspended=lic.suspended,
                usage_period=rule.to_api() if rule else None,
                period_anchor=lic.period_anchor,
                period_start=lic.period_start,
                period_end=lic.period_end,
                metadata=lic.metadata,
                created=lic.created,
                updated=lic.updated,
            ),
            relationships={
                "product": self._rel("products", lic.product_id),
                "policy": self._rel("policies", lic.policy_id),
            },
            links=s.Links(self_=f"{self.base}/licenses/{lic.id}"),
        )

    def machine(self, m: Machine, now: datetime) -> s.MachineResource:
        return s.MachineResource(
            id=m.id,
            attributes=s.MachineAttributes(
                fingerprint=m.fingerprint,
                cores=m.cores,
                name=m.name,
                platform=m.platform,
                hostname=m.hostname,
                heartbeat_status=m.heartbeat_status(now),
                last_heartbeat=m.last_heartbeat,
                next_heartbeat=m.next_heartbeat,
                metadata=m.metadata,
                created=m.created,
                updated=m.updated,
            ),
            relationships={"license": self._rel("licenses", m.license_id)},
            links=s.Links(self_=f"{self.base}/machines/{m.id}"),
        )

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
