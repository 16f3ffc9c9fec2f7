"""Keygen's machine and core limits, as pure functions.

The store serializes activations per license (a row lock, or SQLite's single writer); inside
that lock these functions decide, from the license's current machine count and core total.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.domain.errors import (
    CoresInvalid,
    MachineCoreLimitExceeded,
    MachineLimitExceeded,
    OverageStrategyNotAllowed,
)
from bridge.domain.limits import check_int4
from bridge.domain.model import License, OverageStrategy, Policy

# Keygen's allowances as exact fractions (numerator, denominator) of the maximum.
_ALLOWANCE = {
    OverageStrategy.NO_OVERAGE: (1, 1),
    OverageStrategy.ALLOW_1_25X_OVERAGE: (5, 4),
    OverageStrategy.ALLOW_1_5X_OVERAGE: (3, 2),
    OverageStrategy.ALLOW_2X_OVERAGE: (2, 1),
}
# Strategies that need the maximum divisible by this, and are refused for node-locked policies.
_DIVISOR = {OverageStrategy.ALLOW_1_25X_OVERAGE: 4, OverageStrategy.ALLOW_1_5X_OVERAGE: 2}


@dataclass(frozen=True, slots=True)
class MachineLimits:
    """A license's effective machine limits: its overrides, else its policy's."""

    floating: bool
    strict: bool
    max_machines: int | None
    max_cores: int | None
    overage: OverageStrategy

    @classmethod
    def of(cls, policy: Policy, license: License) -> MachineLimits:
        terms = license.terms
        return cls(
            policy.floating,
            policy.strict,
            terms.max_machines,
            terms.max_cores,
            policy.overage_strategy,
        )


@dataclass(frozen=True, slots=True)
class MachineTally:
    """What a license has activated: machine count and core total (None cores count as 0)."""

    machines: int
    cores: int


def within_overage(strategy: OverageStrategy, value: int, maximum: int) -> bool:
    """Whether ``value`` is within ``maximum`` and the strategy's allowance (integer maths)."""
    if value <= maximum or strategy is OverageStrategy.ALWAYS_ALLOW_OVERAGE:
        return True
    numerator, denominator = _ALLOWANCE[strategy]
    return value * denominator <= maximum * numerator


def check_cores(cores: int | None) -> int | None:
    """Keygen's ``cores`` validation: 1..2147483647, or null."""
    if cores is not None:
        check_int4(cores, minimum=1, error=CoresInvalid)
    return cores


def check_activation(limits: MachineLimits, tally: MachineTally, cores: int | None) -> None:
    """Keygen's create validations, machine count first: the first machine is always allowed,
    and ALWAYS_ALLOW_OVERAGE skips both checks."""
    maximum = limits.max_machines
    first = tally.machines == 0
    if (
        maximum is not None
        and not first
        and not within_overage(limits.overage, tally.machines + 1, maximum)
    ):
        raise MachineLimitExceeded.for_max(maximum)
    check_core_total(limits, tally.cores + (cores or 0))


def check_core_total(limits: MachineLimits, total: int) -> None:
    """The license's core total after an activation or a core change."""
    if limits.max_cores is not None and not within_overage(limits.overage, total, limits.max_cores):
        raise MachineCoreLimitExceeded.for_max(limits.max_cores)


def check_overage_compatible(
    strategy: OverageStrategy, floating: bool, max_machines: int | None, max_cores: int | None
) -> None:
    """Keygen's policy validation: 1.25x and 1.5x are refused for node-locked policies and need
    maxima divisible by 4 and 2 (maxMachines only on floating policies)."""
    divisor = _DIVISOR.get(strategy)
    if divisor is None:
        return
    if not floating:
        raise OverageStrategyNotAllowed(
            f"incompatible overage strategy (cannot use {strategy.value} for node-locked policy)"
        )
    for label, value in (("max machines", max_machines), ("max cores", max_cores)):
        if value is not None and value % divisor != 0:
            raise OverageStrategyNotAllowed(
                f"incompatible overage strategy (cannot use {strategy.value} with a {label} "
                f"value not divisible by {divisor})"
            )
