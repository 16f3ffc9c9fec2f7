"""A license's subjects per webhook provider, from the providers' templates."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.domain.delivery import LicenseFacts
from bridge.domain.model import License
from connectors._template import MappingMissing, render


class TemplateSubjects:
    """``(provider, subject)`` for each provider whose template the license fills in."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self.templates = dict(templates)

    def __call__(self, license: License) -> list[tuple[str, str]]:
        facts = LicenseFacts(license.id, license.key, license.policy_id, license.metadata)
        found = []
        for provider, template in self.templates.items():
            try:
                found.append((provider, render(template, facts, license.id)))
            except MappingMissing:
                continue
        return found
