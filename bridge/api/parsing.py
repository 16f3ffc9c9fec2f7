"""Request bodies and values parsed so that whatever is accepted can be stored and rendered.

The limits, all documented in the README's error table:

- a body is UTF-8 JSON without ``NaN``/``Infinity``, without numbers past 4300 digits or
  outside the float range, nested at most ``MAX_JSON_DEPTH`` deep (``JSON_INVALID``);
- no string anywhere in it holds a NUL character or a lone UTF-16 surrogate (``STRING_INVALID``,
  pointer to the string), since PostgreSQL cannot store either and a surrogate cannot be
  encoded in the answer;
- ``metadata`` nests at most ``MAX_METADATA_DEPTH`` objects/arrays deep and encodes to at most
  ``MAX_METADATA_BYTES`` bytes (``METADATA_INVALID``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from bridge.api.sources import Located, Source
from bridge.domain.errors import JsonInvalid, StringInvalid

MAX_JSON_DEPTH = 64
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16_384

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_ok(value: str) -> bool:
    """Text the store can hold and the answer can encode."""
    return _BAD_TEXT.search(value) is None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number is out of range")
    return value


def _escape(token: str) -> str:
    """A JSON pointer token; a bad character is shown as ``\\uXXXX`` so the error renders."""
    token = token.replace("~", "~0").replace("/", "~1")
    return _BAD_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", token)


def _check_strings(value: Any) -> None:
    """Raise ``StringInvalid`` with the pointer of the first bad string (key or value), and
    ``JsonInvalid`` past ``MAX_JSON_DEPTH``; iterative, so depth cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, pointer, depth = stack.pop()
        if isinstance(item, str):
            if not text_ok(item):
                raise Located(StringInvalid(), Source(pointer=pointer or "/"))
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise JsonInvalid(f"The request body nests deeper than {MAX_JSON_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                child_pointer = f"{pointer}/{_escape(str(key))}"
                if isinstance(key, str) and not text_ok(key):
                    raise Located(StringInvalid(), Source(pointer=child_pointer))
                stack.append((child, child_pointer, depth + 1))


def parse_json(body: bytes) -> Any:
    """The body as JSON, or ``JsonInvalid`` / ``StringInvalid`` (``Located`` at the string)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonInvalid("The request body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise JsonInvalid(f"The request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise JsonInvalid(f"The request body is not valid JSON: {exc.msg}") from None
    except ValueError as exc:  # NaN/Infinity, a float out of range, an int past 4300 digits
        raise JsonInvalid(f"The request body is not valid JSON: {exc}") from None
    _check_strings(value)
    return value


class _JsonApiRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonApiRoute(APIRoute):
    """Parses JSON bodies with ``parse_json`` (FastAPI's parser lets all of the above through).
    Its error reaches the error handler as the cause of FastAPI's 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_strictly(request: Request) -> Response:
            return await handler(_JsonApiRequest(request.scope, request.receive))

        return parse_strictly


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _checked_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_METADATA_DEPTH:
        raise PydanticCustomError(
            "metadata_invalid", f"nests deeper than {MAX_METADATA_DEPTH} levels"
        )
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "metadata_invalid", f"is larger than {MAX_METADATA_BYTES} bytes as JSON"
        )
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_checked_metadata)]
