"""Settings of the Keygen relay (one ``[keygen]`` table; ``BRIDGE_KEYGEN__...``).

The relay is off (``/v1/webhooks/keygen`` answers 404) until ``account_id`` and ``public_key``
are set; the periodic check and the per-period resets also need ``token``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator

from bridge.domain.periods import PeriodRule, rule_from_json
from bridge.webhooks.verify import KeygenKey, keygen_public_key

DEFAULT_USAGE_PERIOD = '{"interval":"month","count":1,"anchor":"CALENDAR","timezone":"UTC"}'


class KeygenSettings(BaseModel):
    account_id: str | None = Field(
        None, description="The Keygen account's id (UUID): the webhooks' keyid, the API's path"
    )
    api_url: str = Field("https://api.keygen.sh", description="Keygen's API (self-hosted: yours)")
    token: SecretStr | None = Field(
        None,
        description=(
            "A product or admin token (secret; give it through BRIDGE_KEYGEN__TOKEN): reads "
            "licenses for the check and resets their usage at each period close"
        ),
    )
    algorithm: Literal["ed25519", "rsa-pss-sha256", "rsa-sha256"] = Field(
        "ed25519", description="The webhook endpoint's signatureAlgorithm"
    )
    public_key: str | None = Field(
        None,
        description=(
            "The account's public key: Ed25519 as the dashboard shows it (64 hex digits) or as "
            "the API gives it (base64 of the hex); RSA as PEM (or base64 of the PEM)"
        ),
    )
    tolerance_s: float = Field(
        300.0, ge=0, description="Accepted distance of the signed Date from now (0: no check)"
    )
    public_host: str | None = Field(
        None,
        description=(
            "The host Keygen posts to (the webhook URL's host, no port), when a proxy stands "
            "in front; default: the Host header received, without its port"
        ),
    )
    usage_period: str | None = Field(
        DEFAULT_USAGE_PERIOD,
        description=(
            "The usagePeriod given to each Keygen policy when it is first mirrored (JSON, as "
            "a policy's); change one policy's with PATCH /v1/policies/{id}; null: no resets"
        ),
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one call to Keygen's API")
    requests_per_s: float = Field(
        1.0,
        gt=0,
        le=50,
        description="Pace of the check's and the resets' calls, under Keygen's rate limits",
    )
    check_interval_s: float = Field(300.0, gt=0, description="How often the periodic check runs")
    sweep_s: float = Field(
        86400.0, gt=0, description="Every other mirrored license is checked at least this often"
    )
    checks_per_run: int = Field(
        200, ge=1, le=100_000, description="At most this many licenses checked per run"
    )
    reset_retry_base_s: float = Field(2.0, gt=0, description="First retry delay of a reset")
    reset_retry_cap_s: float = Field(600.0, gt=0, description="Largest retry delay of a reset")

    @field_validator("api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("usage_period")
    @classmethod
    def _period(cls, value: str | None) -> str | None:
        if value is None or value.strip() in ("", "null"):
            return None  # no per-period resets
        try:
            rule_from_json(value)
        except Exception as exc:  # the domain's error, or JSON's
            raise ValueError(f"usage_period: {exc}") from None
        return value

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:  # ValueError names the form expected
            keygen_public_key(value, info.data.get("algorithm", "ed25519"))
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.account_id and self.public_key)

    @property
    def key(self) -> KeygenKey:
        assert self.public_key is not None
        return keygen_public_key(self.public_key, self.algorithm)

    @property
    def rule(self) -> PeriodRule | None:
        return rule_from_json(self.usage_period)
