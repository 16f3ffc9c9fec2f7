"""The one place errors become HTTP responses: JSON:API error documents with stable codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.api.render import JSONAPI, JsonApiResponse
from bridge.api.sources import Located, Source, source_of
from bridge.domain.errors import (
    AttributeInvalid,
    BadRequest,
    BridgeError,
    IdInvalid,
    JsonInvalid,
    MetadataInvalid,
    MethodNotAllowed,
    PageInvalid,
    ParameterMissing,
    ParameterUnpermitted,
    PayloadTooLarge,
    RouteNotFound,
    TokenMissing,
    TypeMismatch,
)
from bridge.service.common import MAX_PAGE_NUMBER, MAX_PAGE_SIZE

log = structlog.get_logger(__name__)
RETRY_AFTER_S = 1  # seconds: a restarted database or a freed pool is usually back this soon

_EXPECTED = {
    "int_type": "integer",
    "int_from_float": "integer",
    "int_parsing": "integer",
    "string_type": "string",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
    "datetime_type": "datetime",
    "datetime_parsing": "datetime",
    "datetime_from_date_parsing": "datetime",
    "literal_error": "one of the allowed values",
}


_JSON_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: bool is an int in Python
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (dict, "object"),
    (list, "array"),
)


def _received(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_NAMES if isinstance(value, kind)), "unknown")


_PAGE_DETAIL = {
    "page[number]": f"page number must be a number between 1 and {MAX_PAGE_NUMBER}",
    "page[size]": f"page size must be a number between 1 and {MAX_PAGE_SIZE}",
    "limit": f"limit must be a number between 1 and {MAX_PAGE_SIZE}",  # Keygen's, less the value
}


def error_from_validation(errors: Sequence[Any]) -> Located:
    """Translate the first pydantic/FastAPI validation error into one of ours, at its place in
    the request."""
    err = errors[0]
    where, *path = err["loc"]
    kind = err["type"]
    location = "/" + "/".join(str(p) for p in path) if where == "body" else None
    parameter = str(path[-1]) if where in ("query", "header", "path") and path else None
    at = Source(pointer=location, parameter=parameter)
    if where == "query" and parameter in _PAGE_DETAIL:
        return Located(PageInvalid(_PAGE_DETAIL[parameter]), Source(parameter=parameter))
    if kind == "metadata_invalid":
        return Located(MetadataInvalid(str(err.get("msg"))), Source(pointer=location))
    if kind == "id_invalid":
        return Located(IdInvalid(str(err.get("msg"))), Source(pointer=location))
    if kind == "json_invalid":
        detail = f"The request body is not valid JSON: {err.get('ctx', {}).get('error', '')}"
        return Located(JsonInvalid(detail.rstrip(": ")), at)
    if kind == "extra_forbidden":
        return Located(ParameterUnpermitted(), at)
    if kind == "missing":
        if location == "/":
            return Located(ParameterMissing("request body is missing"), Source(pointer="/data"))
        return Located(ParameterMissing(), at)
    if kind in _EXPECTED:
        detail = (
            f"type mismatch (received {_received(err.get('input'))} expected {_EXPECTED[kind]})"
        )
        if kind == "literal_error":
            detail = f"must be {err.get('ctx', {}).get('expected', 'an allowed value')}"
        return Located(TypeMismatch(detail), at)
    if where == "body":
        message = str(err.get("msg", "is invalid"))
        return Located(AttributeInvalid(message), Source(pointer=location))
    return Located(BadRequest(str(err.get("msg", "is invalid"))), Source(parameter=parameter))


def error_document(
    error: BridgeError, request_id: str | None, source: Source | None = None
) -> dict[str, Any]:
    """The error at ``source``, else where its domain field is (``bridge.api.sources``)."""
    item: dict[str, Any] = {"title": error.title, "detail": error.detail, "code": error.code}
    where = (source or source_of(error) or Source()).document()
    if where:
        item["source"] = where
    return {"meta": {"id": request_id}, "errors": [item]}


def error_response(
    error: BridgeError | Located, request_id: str | None, source: Source | None = None
) -> JsonApiResponse:
    """The error document of ``error``: a domain error where its field is, or an error the API
    found where it found it (``Located``)."""
    if isinstance(error, Located):
        source = error.source
        error = error.error
    headers = None
    if error.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="meterbridge"'}
    elif error.status == 503:  # the store is away or contended: tell clients when to retry
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JsonApiResponse(
        error_document(error, request_id, source), status_code=error.status, headers=headers
    )


def unexpected_response(method: str, route: str | None, request_id: str | None) -> JsonApiResponse:
    """The 500 document for an error nobody expected (a bug), logged with its traceback under
    the route's template, never the path (a path may carry a license key). Call it from an
    ``except`` block."""
    log.exception("request_failed", method=method, route=route)
    return error_response(BridgeError(), request_id)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an error document."""

    @app.exception_handler(BridgeError)
    async def _bridge(request: Request, exc: BridgeError) -> JsonApiResponse:
        return error_response(exc, _request_id(request))

    @app.exception_handler(Located)
    async def _located(request: Request, exc: Located) -> JsonApiResponse:
        return error_response(exc, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JsonApiResponse:
        return error_response(error_from_validation(exc.errors()), _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JsonApiResponse:
        error: BridgeError | Located
        if isinstance(exc.__cause__, BridgeError | Located):  # the body guard, via FastAPI's parser
            error = exc.__cause__
        elif exc.status_code == 404:
            error = RouteNotFound()
        elif exc.status_code == 405:
            error = MethodNotAllowed()
        elif exc.status_code == 413:
            error = PayloadTooLarge(str(exc.detail))
        elif exc.status_code == 401:
            error = TokenMissing()
        else:
            error = BadRequest(str(exc.detail))
        return error_response(error, _request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonApiResponse:
        route = getattr(request.scope.get("route"), "path", None)
        return unexpected_response(request.method, route, _request_id(request))


__all__ = ["JSONAPI", "error_response", "install"]
