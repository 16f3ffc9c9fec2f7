"""Check-out: license and machine files, signed snapshots a client verifies offline.

The format is Keygen's (``bridge.domain.checkout``); the dataset inside is the resource's
JSON:API document, which the API renders (``Dataset``). A check-out records ``lastCheckOut``
after rendering the file, so the file shows the previous one (Keygen touches it afterwards).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.domain.access import LicenseAction, MachineAction, Principal
from bridge.domain.checkout import (
    IV_BYTES,
    CheckoutTerms,
    FileKind,
    certificate,
    checkout_terms,
    dataset_meta,
    expiry_after,
    file_secret,
)
from bridge.domain.commands import CheckOut
from bridge.domain.model import License, Machine, Policy, Product
from bridge.domain.ports import Clock, Signer, UnitOfWork, UnitOfWorkFactory
from bridge.service.common import Answer, ignore, new_id
from bridge.service.licenses import load_license
from bridge.service.machines import visible_machine


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a file's dataset shows, as of the check-out: the license (and the machine, for a
    machine file), the included resources the request named, and the file's ``meta``."""

    license: License
    machine: Machine | None
    included_license: bool  # a machine file's ``license`` (or ``license.*``) include
    product: Product | None
    policy: Policy | None
    meta: dict[str, Any]
    now: datetime


# Renders a snapshot as the JSON:API document the file carries (compact JSON).
Dataset = Callable[[Snapshot], str]


@dataclass(frozen=True, slots=True)
class CheckedOutFile:
    """A license file or a machine file: Keygen's ``license-files`` / ``machine-files``."""

    id: str
    kind: FileKind
    license_id: str
    machine_id: str | None
    certificate: str
    issued: datetime
    expiry: datetime | None
    ttl: int | None
    includes: tuple[str, ...]
    algorithm: str


class CheckoutService:
    def __init__(self, uows: UnitOfWorkFactory, clock: Clock, signer: Signer) -> None:
        self._uows = uows
        self._clock = clock
        self._signer = signer

    def license_file(
        self,
        principal: Principal,
        license_ref: str,
        request: CheckOut,
        dataset: Dataset,
        answer: Answer[CheckedOutFile] = ignore,
    ) -> CheckedOutFile:
        """The license's file (by id or key); 404/403 before any parameter error (Keygen)."""
        with self._uows(write=True) as uow:
            license = load_license(uow.licenses, principal, license_ref, LicenseAction.CHECK_OUT)
            terms = checkout_terms(FileKind.LICENSE, request)
            found = self._issue(uow, license, None, set(terms.includes), terms, dataset)
            uow.licenses.touch_checked_out(license.id, found.issued)
            answer(found)
            uow.commit()
        return found

    def machine_file(
        self,
        principal: Principal,
        machine_ref: str,
        request: CheckOut,
        dataset: Dataset,
        answer: Answer[CheckedOutFile] = ignore,
    ) -> CheckedOutFile:
        """The machine's file (by id or fingerprint), encrypted under the license key and the
        fingerprint; the license is in ``included`` when an include names it (keygen-rs sends
        ``license.entitlements`` by default, which does)."""
        with self._uows(write=True) as uow:
            machine, license = visible_machine(uow, principal, machine_ref, MachineAction.CHECK_OUT)
            terms = checkout_terms(FileKind.MACHINE, request)
            # ``license.product`` includes the license and its product (JSON:API includes every
            # resource on the path); the machine's own owner, group, ... the bridge has none of.
            on_license = [n for n in terms.includes if n == "license" or n.startswith("license.")]
            names = {n.removeprefix("license.") for n in on_license}
            if on_license:
                names.add("license")
            found = self._issue(uow, license, machine, names, terms, dataset)
            uow.machines.touch_checked_out(machine.id, found.issued)
            answer(found)
            uow.commit()
        return found

    def _issue(
        self,
        uow: UnitOfWork,
        license: License,
        machine: Machine | None,
        names: set[str],
        terms: CheckoutTerms,
        dataset: Dataset,
    ) -> CheckedOutFile:
        """The signed file of the license, or of its machine, as of now."""
        kind = FileKind.LICENSE if machine is None else FileKind.MACHINE
        issued = self._clock.now()
        expiry = expiry_after(issued, terms.ttl)
        snapshot = Snapshot(
            license=license,
            machine=machine,
            included_license=machine is not None and "license" in names,
            product=uow.products.get(license.product_id) if "product" in names else None,
            policy=uow.policies.get(license.policy_id) if "policy" in names else None,
            meta=dataset_meta(issued, expiry, terms.ttl),
            now=issued,
        )
        fingerprint = machine.fingerprint if machine is not None else None
        secret = file_secret(kind, license.key, fingerprint)
        text = certificate(
            kind, dataset(snapshot), terms, self._signer, secret=secret, iv=os.urandom(IV_BYTES)
        )
        return CheckedOutFile(
            id=new_id(),
            kind=kind,
            license_id=license.id,
            machine_id=machine.id if machine is not None else None,
            certificate=text,
            issued=issued,
            expiry=expiry,
            ttl=terms.ttl,
            includes=terms.includes,
            algorithm=terms.algorithm,
        )
