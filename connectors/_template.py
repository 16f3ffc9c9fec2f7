"""License templates shared by the platform mappings.

A template names a billing entity from a license, e.g. ``{license.metadata.lago_subscription_id}``
or ``acct-{license.key}``. Placeholders: ``{license.id}``, ``{license.key}`` and
``{license.metadata.NAME}``; anything else is refused when the settings load.
"""

from __future__ import annotations

import re
from functools import lru_cache

from bridge.domain.delivery import LicenseFacts
from bridge.domain.errors import Transient

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD = re.compile(r"license\.(?:id|key|metadata\.[^{}]+)")


class MappingMissing(Exception, Transient):
    """An item cannot be mapped yet (no metadata value, no code, no license): it waits in the
    outbox, reported as ``MAPPING_MISSING``, until the mapping exists."""


def check_template(template: str) -> str:
    """The template, or ``ValueError`` naming the placeholders it does not know."""
    unknown = [p for p in _PLACEHOLDER.findall(template) if not _FIELD.fullmatch(p)]
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {unknown}; use {{license.id}}, {{license.key}} "
            "or {license.metadata.NAME}"
        )
    return template


@lru_cache(maxsize=256)
def _parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """``template`` split once into (literal text, placeholder or None) pairs: a relay renders
    the same template for every item of every batch."""
    parts: list[tuple[str, str | None]] = []
    start = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append((template[start : match.start()], match.group(1)))
        start = match.end()
    parts.append((template[start:], None))
    return tuple(parts)


def render(template: str, license: LicenseFacts | None, license_id: str) -> str:
    """The template filled in from the license; ``MappingMissing`` when a value is absent."""
    pieces: list[str] = []
    for literal, name in _parts(template):
        pieces.append(literal)
        if name is None:
            continue
        if license is None:
            raise MappingMissing(f"license {license_id} is gone; {template} cannot be resolved")
        if name == "license.id":
            pieces.append(license.id)
        elif name == "license.key":
            pieces.append(license.key)
        else:
            key = name.removeprefix("license.metadata.")
            found = license.metadata.get(key)
            if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
                raise MappingMissing(
                    f"license {license.id} has no metadata {key!r} (for {template})"
                )
            pieces.append(str(found))
    resolved = "".join(pieces)
    if not resolved:
        raise MappingMissing(f"{template!r} resolves to nothing for license {license_id}")
    return resolved
