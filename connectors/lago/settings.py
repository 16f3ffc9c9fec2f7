"""Settings of the Lago sink (one ``[sinks.lago]`` table)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from connectors._template import check_template

# Lago's default ``LAGO_EVENTS_BATCH_MAX_LENGTH``; self-hosted installs may raise it.
LAGO_BATCH_LIMIT = 100
SELF_HOSTED_BATCH_CEILING = 1000


class LagoSinkSettings(BaseModel):
    enabled: bool = Field(False, description="Forward usage changes to Lago as events")
    api_url: str = Field(
        "https://api.getlago.com",
        description="Lago API base URL (https://api.eu.getlago.com for EU, or self-hosted)",
    )
    api_key: SecretStr | None = Field(None, description="Lago API key (Bearer)")
    batch_size: int = Field(
        LAGO_BATCH_LIMIT,
        ge=1,
        le=SELF_HOSTED_BATCH_CEILING,
        description=(
            "Events per request: at most 100 on Lago Cloud; more only if the self-hosted "
            "server's LAGO_EVENTS_BATCH_MAX_LENGTH allows it"
        ),
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one request, in seconds")
    property_field: str = Field(
        "units", min_length=1, description="The event `properties` key that carries the delta"
    )
    forward_decrements: bool = Field(
        True,
        description="Send decrements as negative deltas; if false they are not sent at all",
    )
    policies: list[str] | None = Field(
        None, description="Policy ids whose usage goes to Lago; unset means every policy"
    )
    metric_codes: dict[str, str] = Field(
        default_factory=dict, description="Billable metric code per policy id"
    )
    default_metric_code: str | None = Field(
        None, description="Billable metric code of policies not in metric_codes"
    )
    cores_metric_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Billable metric code of the license's core total (machines), per policy id",
    )
    default_cores_metric_code: str | None = Field(
        None,
        description=(
            "Core-total metric code of policies not in cores_metric_codes; with neither, core "
            "totals are not sent to Lago"
        ),
    )
    cores_property_field: str = Field(
        "cores",
        min_length=1,
        description="The event `properties` key that carries the license's core total",
    )
    subscription_template: str = Field(
        "{license.metadata.lago_subscription_id}",
        description=(
            "external_subscription_id of a license's events; placeholders {license.id}, "
            "{license.key}, {license.metadata.NAME}"
        ),
    )

    dedupe_window_days: float | None = Field(
        30.0,
        gt=0,
        description=(
            "How old a change may be for `reconcile --repair` to resend it; Lago keeps its "
            "transaction_id unique for good on its Postgres events store (unset: never resend)"
        ),
    )
    read_page_size: int = Field(
        100, ge=1, le=1000, description="Events per page when reconciliation lists events"
    )

    @field_validator("subscription_template")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        return check_template(template)

    @model_validator(mode="after")
    def _key_when_enabled(self) -> Self:
        if self.enabled and self.api_key is None:
            raise ValueError("the Lago sink is enabled but api_key is not set")
        return self
