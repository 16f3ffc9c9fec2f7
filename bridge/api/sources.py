"""The one map from a domain ``Field`` to where it is in a request: a JSON:API source.

Domain errors name the field they are about (``MaxUsesInvalid`` is about ``Field.MAX_USES``);
the error document points at it here, with Keygen's pointers (``/data/attributes/maxUses``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.alias_generators import to_camel

from bridge.domain.errors import BridgeError, Field


@dataclass(frozen=True, slots=True)
class Source:
    """A JSON:API error's ``source``: a pointer into the body, or a query/header parameter."""

    pointer: str | None = None
    parameter: str | None = None

    def document(self) -> dict[str, str]:
        if self.pointer is not None:
            return {"pointer": self.pointer}
        return {"parameter": self.parameter} if self.parameter is not None else {}


class Located(Exception):
    """An error the API finds at a place in the request itself (a string in the body, a query
    parameter, a type mismatch), not about a domain field: rendered at ``source``."""

    def __init__(self, error: BridgeError, source: Source) -> None:
        super().__init__(error.detail)
        self.error = error
        self.source = source


def _attribute(field: Field) -> Source:
    """An attribute, spelled as the request schemas spell it (their alias generator)."""
    return Source(pointer=f"/data/attributes/{to_camel(field.value)}")


def _relationship(field: Field) -> Source:
    return Source(pointer=f"/data/relationships/{field.value}")


_ATTRIBUTES = (
    Field.NAME,
    Field.KEY,
    Field.USES,
    Field.MAX_USES,
    Field.MAX_MACHINES,
    Field.MAX_CORES,
    Field.OVERAGE_STRATEGY,
    Field.EXPIRATION_BASIS,
    Field.DURATION,
    Field.HEARTBEAT_DURATION,
    Field.EXPIRATION_STRATEGY,
    Field.HEARTBEAT_CULL_STRATEGY,
    Field.HEARTBEAT_RESURRECTION_STRATEGY,
    Field.HEARTBEAT_BASIS,
    Field.CHECK_IN_INTERVAL,
    Field.CHECK_IN_INTERVAL_COUNT,
    Field.EXPIRY,
    Field.USAGE_PERIOD,
    Field.PERIOD_ANCHOR,
    Field.METADATA,
    Field.FINGERPRINT,
    Field.CORES,
    Field.PLATFORM,
    Field.HOSTNAME,
    Field.SCHEME,
)

SOURCES: dict[Field, Source] = {
    Field.RESOURCE: Source(pointer="/data"),
    **{field: _attribute(field) for field in _ATTRIBUTES},
    Field.PRODUCT: _relationship(Field.PRODUCT),
    Field.POLICY: _relationship(Field.POLICY),
    Field.LICENSE: _relationship(Field.LICENSE),
    Field.INCREMENT: Source(pointer="/meta/increment"),
    Field.DECREMENT: Source(pointer="/meta/decrement"),
    Field.PAGE: Source(parameter="page"),
    Field.IDEMPOTENCY_KEY: Source(parameter="Idempotency-Key"),
    # Keygen points check-out errors at the parameter, whether sent in the query or in meta.
    Field.TTL: Source(parameter="ttl"),
    Field.ALGORITHM: Source(parameter="algorithm"),
    Field.INCLUDE: Source(parameter="include"),
}


def source_of(error: BridgeError) -> Source | None:
    """Where the error's field is in the request; ``None`` for an error about no one field."""
    return SOURCES[error.field] if error.field is not None else None
