"""Check-out: ``/licenses/{id}/actions/check-out`` and ``/machines/{id}/actions/check-out``.

POST answers Keygen's ``license-files`` / ``machine-files`` document; GET answers the certificate
itself as a ``.lic`` attachment. The parameters come from the query, and for POST also from the
body's ``meta`` (which wins), as Keygen merges them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request, Response

from bridge.api import schemas as s
from bridge.api.deps import ApiContext, Bearer, Ctx
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import Rendered
from bridge.api.sources import Located, Source
from bridge.domain.access import Principal
from bridge.domain.checkout import FileKind, compact_json, keygen_time
from bridge.domain.commands import UNSET, CheckOut, Maybe
from bridge.domain.errors import TypeMismatch
from bridge.service.checkout import CheckedOutFile, Snapshot
from bridge.service.common import Answer

router = APIRouter(tags=["check-out"], route_class=JsonApiRoute)

# Keygen's typed_params boolean coercion; a blank value is null (no encryption).
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})
_INTEGER = re.compile(r"-?[0-9]+")


class CheckOutMeta(s.Strict):
    encrypt: bool | None = None
    algorithm: str | None = None
    ttl: int | None = None
    include: list[str] | None = None


class CheckOutIn(s.Strict):
    meta: CheckOutMeta | None = None


class FileAttributes(s.Out):
    """Keygen's license file attributes, in its serializer's order."""

    certificate: str
    algorithm: str
    includes: list[str]
    ttl: int | None
    expiry: str | None
    issued: str


class FileResource(s.Out):
    id: str
    type: Literal["license-files", "machine-files"]
    attributes: FileAttributes
    relationships: dict[str, s.RelationshipOut]


class FileDocument(s.Out):
    data: FileResource


def _mismatch(name: str, value: str, expected: str) -> Located:
    detail = f"type mismatch (received string expected {expected})"
    return Located(TypeMismatch(detail), Source(parameter=name))


def _bounded_int(raw: str) -> int:
    """The integer, or one as far out of the ttl's bounds when it has more than 18 digits
    (Python refuses to convert very long ones)."""
    sign = -1 if raw.startswith("-") else 1
    digits = raw.lstrip("-").lstrip("0") or "0"
    return sign * (int(digits) if len(digits) <= 18 else 10**18)


def _from_query(query: Mapping[str, str]) -> dict[str, Any]:
    """The check-out parameters the query names, coerced as Keygen's ``typed_query`` does."""
    found: dict[str, Any] = {}
    if "encrypt" in query:
        value = query["encrypt"].strip().lower()
        if value not in _TRUE | _FALSE:
            raise _mismatch("encrypt", value, "boolean")
        found["encrypt"] = value in _TRUE
    if "algorithm" in query:
        found["algorithm"] = query["algorithm"]
    if "ttl" in query:
        raw = query["ttl"].strip()
        if raw and _INTEGER.fullmatch(raw) is None:
            raise _mismatch("ttl", raw, "integer")
        found["ttl"] = _bounded_int(raw) if raw else None  # blank: no expiry
    if "include" in query:
        found["include"] = [name for name in query["include"].split(",") if name]
    return found


def _command(query: Mapping[str, str], body: CheckOutIn | None) -> CheckOut:
    values = _from_query(query)
    meta = body.meta if body is not None else None
    if meta is not None:
        values |= {name: getattr(meta, name) for name in meta.model_fields_set}
    ttl: Maybe[int | None] = values.get("ttl", UNSET)
    return CheckOut(
        encrypt=bool(values.get("encrypt")),
        algorithm=values.get("algorithm"),
        ttl=ttl,
        include=tuple(values.get("include") or ()),
    )


def _dataset(ctx: ApiContext) -> Any:
    """Renders a snapshot as the document inside the file (compact JSON, as Keygen's)."""

    def render(snap: Snapshot) -> str:
        included: list[Any] = []
        if snap.machine is not None:
            data: Any = ctx.render.machine(snap.machine, snap.now)
            if snap.included_license:
                included.append(ctx.render.license(snap.license, snap.now))
        else:
            data = ctx.render.license(snap.license, snap.now)
        if snap.product is not None:
            included.append(ctx.render.product(snap.product))
        if snap.policy is not None:
            included.append(ctx.render.policy(snap.policy))
        document: dict[str, Any] = {"data": _json(data)}
        if included:
            document["included"] = [_json(item) for item in included]
        document["meta"] = snap.meta
        return compact_json(document)

    return render


def _json(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _document(ctx: ApiContext, found: CheckedOutFile) -> FileDocument:
    base = ctx.render.base
    license_rel = s.RelationshipOut(
        data=s.IdentifierOut(type="licenses", id=found.license_id),
        links=s.RelatedLinks(related=f"{base}/licenses/{found.license_id}"),
    )
    relationships = {
        "account": s.RelationshipOut(
            data=s.IdentifierOut(type="accounts", id=ctx.account),
            links=s.RelatedLinks(related=base),
        ),
        "environment": s.RelationshipOut(data=None),
        "license": license_rel,
    }
    if found.machine_id is not None:
        relationships["machine"] = s.RelationshipOut(
            data=s.IdentifierOut(type="machines", id=found.machine_id),
            links=s.RelatedLinks(related=f"{base}/machines/{found.machine_id}"),
        )
    kind: Literal["license-files", "machine-files"] = (
        "license-files" if found.kind is FileKind.LICENSE else "machine-files"
    )
    issued = keygen_time(found.issued)
    assert issued is not None
    return FileDocument(
        data=FileResource(
            id=found.id,
            type=kind,
            attributes=FileAttributes(
                certificate=found.certificate,
                algorithm=found.algorithm,
                includes=list(found.includes),
                ttl=found.ttl,
                expiry=keygen_time(found.expiry),
                issued=issued,
            ),
            relationships=relationships,
        )
    )


class _Attachment:
    """GET's answer: the certificate as a file named after the resource (Keygen)."""

    def __init__(self) -> None:
        self._response: Response | None = None

    @property
    def response(self) -> Response:
        assert self._response is not None, "the use case did not render its answer"
        return self._response

    def __call__(self, found: CheckedOutFile) -> None:
        name = found.machine_id or found.license_id
        self._response = Response(
            content=found.certificate.encode(),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}.lic"'},
        )


_Body = Annotated[CheckOutIn | None, Body()]
# GET's 200 is the certificate; its errors are JSON:API documents like every other route's.
_ATTACHMENT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
}


def _check_out(
    ctx: ApiContext,
    bearer: Principal,
    kind: FileKind,
    ref: str,
    request: CheckOut,
    answer: Answer[CheckedOutFile],
) -> None:
    issue = ctx.checkout.license_file if kind is FileKind.LICENSE else ctx.checkout.machine_file
    issue(bearer, ref, request, _dataset(ctx), answer)


def _document_answer(ctx: ApiContext) -> Rendered[CheckedOutFile]:
    return Rendered(lambda found: _document(ctx, found))


def _add_routes(collection: str, kind: FileKind, alias: str) -> None:
    """POST (the document) and GET (the attachment) of one kind of file."""
    path = f"/{collection}/{{ref}}/actions/check-out"

    @router.post(
        path,
        response_model=FileDocument,
        name=f"check_out_{kind.value}",
        description=f"A {kind.value} file; ``ref`` is its id or {alias}.",
    )
    def check_out(
        ctx: Ctx, bearer: Bearer, request: Request, ref: str, body: _Body = None
    ) -> Response:
        answer = _document_answer(ctx)
        command = _command(request.query_params, body)
        _check_out(ctx, bearer, kind, ref, command, answer)
        return answer.response

    @router.get(
        path,
        responses=_ATTACHMENT,
        name=f"download_{kind.value}_file",
        description=f"The {kind.value} file's certificate, as ``<id>.lic``.",
    )
    def download(ctx: Ctx, bearer: Bearer, request: Request, ref: str) -> Response:
        answer = _Attachment()
        _check_out(ctx, bearer, kind, ref, _command(request.query_params, None), answer)
        return answer.response


_add_routes("licenses", FileKind.LICENSE, "key")
_add_routes("machines", FileKind.MACHINE, "fingerprint")
