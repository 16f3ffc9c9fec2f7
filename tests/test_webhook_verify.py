"""The signature verifiers: each provider's scheme accepted, and every forgery refused."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from bridge.domain.errors import (
    WebhookSignatureInvalid,
    WebhookSignatureMissing,
    WebhookTimestampStale,
    WebhookUnverified,
)
from bridge.webhooks.verify import (
    standard_secret,
    verify_lago,
    verify_lago_hmac,
    verify_lago_jwt,
    verify_m3ter,
    verify_standard,
    verify_stripe,
)
from tests import webhook_signing as sign

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BODY = b'{"webhook_type":"subscription.started","object_type":"subscription"}'
ISSUER = "https://api.getlago.com"


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_lago_hmac_accepts_its_signature_and_refuses_a_changed_body_or_key() -> None:
    """base64 HMAC-SHA256 of the raw body under the org's HMAC token; any change is refused."""
    key = secrets.token_hex(16)
    headers = _lower(sign.lago_hmac(key, BODY, "u-1"))
    verify_lago_hmac(key, headers, BODY)
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago_hmac(key, headers, BODY + b" ")
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago_hmac("another-key", headers, BODY)
    with pytest.raises(WebhookSignatureMissing):
        verify_lago_hmac(key, {}, BODY)


def test_lago_jwt_checks_the_key_the_issuer_and_that_data_is_the_body() -> None:
    """RS256 under Lago's public key, iss equal to the configured issuer, data == body."""
    keys, other = sign.RsaKeys(), sign.RsaKeys()
    headers = _lower(keys.lago_jwt(BODY, "u-1", ISSUER))
    verify_lago_jwt(keys.public_pem, ISSUER, headers, BODY)
    with pytest.raises(WebhookSignatureInvalid):  # another key signed it
        verify_lago_jwt(other.public_pem, ISSUER, headers, BODY)
    with pytest.raises(WebhookSignatureInvalid, match="issuer"):
        verify_lago_jwt(keys.public_pem, "https://evil.example", headers, BODY)
    with pytest.raises(WebhookSignatureInvalid, match="data"):  # a signed JWT, another body
        verify_lago_jwt(keys.public_pem, ISSUER, headers, b'{"webhook_type":"x"}')
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago_jwt(keys.public_pem, ISSUER, {"x-lago-signature": "not.a.jwt"}, BODY)


def test_lago_jwt_refuses_an_hs256_token_made_with_the_public_key_as_secret() -> None:
    """The algorithm is pinned to RS256: the classic key-confusion forgery fails."""
    import hashlib
    import hmac
    import json

    keys = sign.RsaKeys()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"data": BODY.decode(), "iss": ISSUER}).encode())
    mac = hmac.new(keys.public_pem.encode(), f"{head}.{claims}".encode(), hashlib.sha256)
    token = f"{head}.{claims}.{b64(mac.digest())}"
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago_jwt(keys.public_pem, ISSUER, {"x-lago-signature": token}, BODY)


def test_lago_refuses_a_scheme_it_has_no_key_for() -> None:
    """An HMAC-signed delivery to a JWT-only configuration (and the reverse) is refused."""
    key = secrets.token_hex(16)
    keys = sign.RsaKeys()
    hmac_headers = _lower(sign.lago_hmac(key, BODY, "u-1"))
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago(
            hmac_key=None, public_key_pem=keys.public_pem, issuer=ISSUER,
            headers=hmac_headers, body=BODY,
        )  # fmt: skip
    jwt_headers = _lower(keys.lago_jwt(BODY, "u-1", ISSUER))
    with pytest.raises(WebhookSignatureInvalid):
        verify_lago(hmac_key=key, public_key_pem=None, issuer=None, headers=jwt_headers, body=BODY)


def test_stripe_accepts_any_v1_under_any_secret_within_the_tolerance() -> None:
    """t= and every v1=; rotation: a second secret (or a second v1) matches; v0 is ignored."""
    old, new = "whsec_" + secrets.token_hex(8), "whsec_" + secrets.token_hex(8)
    headers = _lower(sign.stripe([new], BODY, NOW))
    verify_stripe([old, new], 300, headers, BODY, NOW)
    both = _lower(sign.stripe(["whsec_unknown", old], BODY, NOW))
    verify_stripe([old], 300, both, BODY, NOW)
    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe([old], 300, headers, BODY, NOW)
    t = int(NOW.timestamp())
    v0_only = {"stripe-signature": f"t={t},v0=" + "0" * 64}
    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe([old], 300, v0_only, BODY, NOW)


def test_stripe_refuses_stale_and_future_timestamps() -> None:
    """Outside +-tolerance of the clock: stale (a replay of an old, validly signed delivery)."""
    secret = "whsec_" + secrets.token_hex(8)
    headers = _lower(sign.stripe([secret], BODY, NOW))
    verify_stripe([secret], 300, headers, BODY, NOW + timedelta(seconds=300))
    with pytest.raises(WebhookTimestampStale):
        verify_stripe([secret], 300, headers, BODY, NOW + timedelta(seconds=301))
    with pytest.raises(WebhookTimestampStale):
        verify_stripe([secret], 300, headers, BODY, NOW - timedelta(seconds=301))
    verify_stripe([secret], 0, headers, BODY, NOW + timedelta(days=9))  # 0: no check


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=00", "v1=00", "t=1", "t=1,v1=\u00e9\u00e9"],
)
def test_stripe_refuses_malformed_headers(header: str) -> None:
    """A malformed Stripe-Signature is a 401 error, never an exception of another kind."""
    with pytest.raises(WebhookUnverified):
        verify_stripe(["whsec_x"], 300, {"stripe-signature": header}, BODY, NOW)


def test_standard_webhooks_the_specification_example() -> None:
    """The Standard Webhooks specification's own example (secret, id, timestamp, body)."""
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    key = standard_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    at = datetime.fromtimestamp(1614265330, UTC)
    verify_standard([key], 300, headers, b'{"test": 2432232314}', at)
    with pytest.raises(WebhookSignatureInvalid):
        verify_standard([key], 300, headers, b'{"test": 2432232315}', at)


def test_standard_webhooks_id_and_timestamp_are_signed() -> None:
    """Changing webhook-id or webhook-timestamp breaks the signature; a stale one is stale."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    key = standard_secret(secret)
    headers = sign.standard(secret, "msg_1", BODY, NOW)
    verify_standard([key], 300, headers, BODY, NOW)
    with pytest.raises(WebhookSignatureInvalid):
        verify_standard([key], 300, {**headers, "webhook-id": "msg_2"}, BODY, NOW)
    later = str(int(NOW.timestamp()) + 1)
    with pytest.raises(WebhookSignatureInvalid):
        verify_standard([key], 300, {**headers, "webhook-timestamp": later}, BODY, NOW)
    with pytest.raises(WebhookTimestampStale):
        verify_standard([key], 300, headers, BODY, NOW + timedelta(minutes=6))
    with pytest.raises(WebhookSignatureMissing):
        verify_standard([key], 300, {"webhook-id": "msg_1"}, BODY, NOW)


def test_standard_secret_must_be_base64() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        standard_secret("whsec_not base64!")


def test_m3ter_signed_request() -> None:
    """HMAC over url|apiKey|timestamp|body (as the reference describes it), the apiKey checked."""
    url = "https://bridge.example/v1/webhooks/m3ter"
    headers = _lower(sign.m3ter("ak", "sk", url, BODY, NOW))
    kwargs = {"tolerance_s": 300.0, "headers": headers, "body": BODY, "now": NOW}
    verify_m3ter(api_key="ak", secret="sk", url=url, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(WebhookSignatureInvalid):
        verify_m3ter(api_key="other", secret="sk", url=url, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(WebhookSignatureInvalid):
        verify_m3ter(api_key="ak", secret="sk", url=url + "x", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(WebhookTimestampStale):
        verify_m3ter(  # type: ignore[misc]
            api_key="ak", secret="sk", url=url, **{**kwargs, "now": NOW + timedelta(hours=1)}
        )
