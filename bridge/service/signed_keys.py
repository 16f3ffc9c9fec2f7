"""Minting the key of a license whose policy signs its keys (``ED25519_SIGN``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.domain.checkout import keygen_time
from bridge.domain.errors import SchemeNotAllowed
from bridge.domain.model import Policy
from bridge.domain.ports import Signer
from bridge.domain.signed_keys import check_seed, default_seed, formatted_seed, mint


@dataclass(frozen=True, slots=True)
class KeyMint:
    """The account's key and id: what a signed key's dataset and signature need."""

    signer: Signer
    account: str

    def key_for(
        self,
        policy: Policy,
        *,
        license_id: str,
        sent: str | None,
        created: datetime,
        expiry: datetime | None,
    ) -> str:
        """Keygen's ``crypt_key``: the sent key with its template variables filled in, else
        Keygen's default dataset, signed."""
        if sent is None:
            seed = default_seed(
                account=self.account,
                product_id=policy.product_id,
                policy_id=policy.id,
                policy_duration=policy.duration,
                license_id=license_id,
                created=created,
                expiry=expiry,
            )
        else:
            variables = {
                "account": self.account,
                "product": policy.product_id,
                "policy": policy.id,
                "created": keygen_time(created),
                "expiry": keygen_time(expiry),
                "duration": policy.duration,
                "id": license_id,
            }
            seed = check_seed(formatted_seed(sent, variables))
        return mint(seed, self.signer)


def require_mint(mint: KeyMint | None) -> KeyMint:
    if mint is None:
        raise SchemeNotAllowed("unsupported signing scheme (no signing key in this process)")
    return mint
