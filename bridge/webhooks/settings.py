"""Settings of the webhook endpoints (``[webhooks.*]`` tables; ``BRIDGE_WEBHOOKS__...``).

Each endpoint is off (404) until its secret or key is set.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, SecretStr, field_validator

from bridge.webhooks.rules import parse_actions
from bridge.webhooks.verify import standard_secret


def _check_rules(rules: dict[str, str]) -> dict[str, str]:
    for value in rules.values():
        parse_actions(value)  # raises ValueError naming the unknown action
    return rules


# Event type -> actions ("suspend", "align_period,reinstate", "none"): bridge.webhooks.rules
Rules = Annotated[dict[str, str], AfterValidator(_check_rules)]


class LagoWebhookSettings(BaseModel):
    hmac_key: SecretStr | None = Field(
        None, description="HMAC Signature Token (Dashboard > Developers > Webhooks); hmac scheme"
    )
    public_key: str | None = Field(None, description="Lago's RSA public key (PEM); jwt scheme")
    public_key_url: str | None = Field(
        None,
        description=(
            "Where to fetch the public key once (Lago's GET /api/v1/webhooks/json_public_key), "
            "with the Lago sink's API key; jwt scheme"
        ),
    )
    issuer: str | None = Field(
        None, description="The JWT's expected iss: Lago's API URL (Cloud: https://api.getlago.com)"
    )
    subscription_template: str | None = Field(
        None, description="License -> external_subscription_id; default: the Lago sink's template"
    )
    rules: Rules = Field(default_factory=dict, description="Per event type: the action")

    @property
    def enabled(self) -> bool:
        return bool(self.hmac_key or self.public_key or self.public_key_url)


class StripeWebhookSettings(BaseModel):
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Endpoint signing secrets (whsec_...); more than one while rotating",
    )
    tolerance_s: float = Field(300.0, ge=0, description="Accepted clock skew of t= (0: no check)")
    subscription_template: str = Field(
        "{license.metadata.stripe_subscription_id}",
        description="License -> Stripe subscription id",
    )
    rules: Rules = Field(default_factory=dict, description="Per event type: the action")

    @property
    def enabled(self) -> bool:
        return bool(self.secrets)


class M3terWebhookSettings(BaseModel):
    api_key: SecretStr | None = Field(None, description="apiKey of the M3TER_SIGNED_REQUEST")
    secret: SecretStr | None = Field(None, description="secret of the M3TER_SIGNED_REQUEST")
    tolerance_s: float = Field(300.0, ge=0, description="Accepted clock skew (0: no check)")
    url: str | None = Field(
        None, description="The URL m3ter posts to, as it signs it; default: the request's URL"
    )
    account_template: str | None = Field(
        None, description="License -> m3ter account code; default: the m3ter sink's template"
    )
    rules: Rules = Field(default_factory=dict, description="Per event type: the action")

    @property
    def enabled(self) -> bool:
        return bool(self.api_key and self.secret)


class StandardWebhookSettings(BaseModel):
    """A sender signing with the Standard Webhooks scheme (OpenMeter through Svix, ...)."""

    secret: SecretStr = Field(description="whsec_<base64>")
    tolerance_s: float = Field(300.0, ge=0, description="Accepted clock skew (0: no check)")

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        standard_secret(value.get_secret_value())  # raises ValueError naming the format
        return value


class WebhooksSettings(BaseModel):
    lago: LagoWebhookSettings = LagoWebhookSettings()
    stripe: StripeWebhookSettings = StripeWebhookSettings()
    m3ter: M3terWebhookSettings = M3terWebhookSettings()
    standard: dict[str, StandardWebhookSettings] = Field(
        default_factory=dict, description="One table per sender: [webhooks.standard.<source>]"
    )
    max_attempts: int = Field(
        8, ge=1, le=100, description="Handling attempts before a delivery is parked (failed)"
    )
    retry_base_s: float = Field(1.0, gt=0, description="First handling retry delay")
    retry_cap_s: float = Field(300.0, gt=0, description="Largest handling retry delay")
