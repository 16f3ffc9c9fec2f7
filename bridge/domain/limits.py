"""Keygen's usage-limit rules, as pure functions.

The store enforces the same rule atomically in SQL (a conditional UPDATE); these functions are
the specification it follows and the source of every rejection's error.
"""

from __future__ import annotations

from bridge.domain.errors import (
    INT4_MAX,
    BridgeError,
    Field,
    IntegerTooLarge,
    UsesInvalid,
    UsesLimitExceeded,
)


def next_uses(uses: int, delta: int, max_uses: int | None, *, amount: Field) -> int:
    """The counter after adding ``delta``, or the error Keygen answers, in Keygen's order;
    a counter past the integer range is an error about ``amount``, the action's parameter.

    The limit is checked only when the counter changes (a license already above its maximum can
    take ``+0``, but a decrement that leaves it above the maximum is still rejected).
    """
    new = uses + delta
    if delta != 0 and max_uses is not None and new > max_uses:
        raise UsesLimitExceeded.for_max(max_uses)
    if new < 0:
        raise UsesInvalid
    if new > INT4_MAX:
        raise IntegerTooLarge(field=amount)
    return new


def check_int4(value: int, *, minimum: int, error: type[BridgeError]) -> int:
    """Keygen's numericality validation for a 4-byte integer attribute (the error's field)."""
    if value < minimum:
        raise error(f"must be greater than or equal to {minimum}")
    if value > INT4_MAX:
        raise error(f"must be less than or equal to {INT4_MAX}")
    return value
