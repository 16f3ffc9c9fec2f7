"""Settings of the m3ter sink: credentials, endpoints, request limits and the mapping rules."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from connectors._template import check_template

# m3ter's Ingest API takes at most 1,000 measurements and "less than 512,000 bytes" per request
# (reference A.1 "Limits"); the default byte cap keeps a margin under that.
MAX_MEASUREMENTS = 1000
MAX_BYTES = 511_999


class M3terSinkSettings(BaseModel):
    enabled: bool = Field(False, description="Forward usage changes to m3ter's Ingest API")
    org_id: str = Field("", description="The m3ter Organization ID")
    api_url: str = Field(
        "https://api.m3ter.com", description="Config API, where tokens are issued (/oauth/token)"
    )
    ingest_url: str = Field(
        "https://ingest.m3ter.com",
        description="Ingest API, where measurements are posted",
    )
    client_id: str = Field("", description="The Service User's Access Key ID")
    client_secret: SecretStr = Field(SecretStr(""), description="The Service User's API Secret")
    max_measurements: int = Field(
        MAX_MEASUREMENTS, ge=1, le=MAX_MEASUREMENTS, description="Measurements per request"
    )
    max_bytes: int = Field(
        500_000, ge=1024, le=MAX_BYTES, description="Bytes of JSON body per request"
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of each HTTP request")
    token_refresh_margin_s: float = Field(
        300.0, ge=0, description="Take a new token this long before the current one expires"
    )
    measure_field: str = Field(
        "units", description="The code of the Meter's MEASURE data field that carries the delta"
    )
    forward_decrements: bool = Field(
        True, description="Send negative changes as negative measures (m3ter adjustments)"
    )
    policies: list[str] | None = Field(
        None, description="Forward only licenses of these policy ids (None: every policy)"
    )
    meter_codes: dict[str, str] = Field(
        default_factory=dict, description="Meter code per policy id"
    )
    default_meter_code: str | None = Field(
        None, description="Meter code of policies missing from meter_codes"
    )
    cores_meter_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Meter code of the license's core total (machines), per policy id",
    )
    default_cores_meter_code: str | None = Field(
        None,
        description=(
            "Core-total meter code of policies missing from cores_meter_codes; with neither, "
            "core totals are not sent to m3ter"
        ),
    )
    cores_measure_field: str = Field(
        "cores", description="The Meter's MEASURE data field that carries the core total"
    )
    account_template: str = Field(
        "{license.metadata.m3ter_account_code}",
        description=(
            "The m3ter Account code; placeholders {license.id}, {license.key} and "
            "{license.metadata.NAME}"
        ),
    )

    dedupe_window_days: float | None = Field(
        34.0,
        gt=0,
        le=35,
        description=(
            "How old a change may be for `reconcile --repair` to resend it: inside m3ter's "
            "35-day uid dedupe window, with a day of margin (unset: never resend)"
        ),
    )
    usage_sum_key: str = Field(
        "sum",
        description=(
            "Key of the SUM aggregate in a usage-query row (m3ter's row shape is not "
            "documented; check it against your organization's answer)"
        ),
    )
    usage_count_key: str = Field("count", description="Key of the COUNT aggregate in a row")

    @field_validator("account_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        return check_template(value)

    @field_validator("api_url", "ingest_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> Self:
        if self.enabled:
            missing = [
                name
                for name, value in (
                    ("org_id", self.org_id),
                    ("client_id", self.client_id),
                    ("client_secret", self.client_secret.get_secret_value()),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"m3ter sink is enabled but {', '.join(missing)} not set")
        return self
