"""Machines: activate, read, describe or re-size, ping and deactivate; reap dead machines.

Every change of a license's machines runs with the license row held (``licenses.lock``), so two
activations that would each fit alone but not together are decided one after the other: the
second sees the first's machine. Each activation, core change and deactivation writes a ledger
entry, and the outbox forwards the license's new core total to every enabled sink.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

import structlog

from bridge.domain.access import (
    MachineAction,
    Principal,
    Role,
    authorize_machine,
    can_see_license,
)
from bridge.domain.attributes import check_fingerprint, check_text, given
from bridge.domain.commands import UNSET, MachinePatch, NewMachine
from bridge.domain.errors import (
    Field,
    FingerprintTaken,
    LicenseNotFound,
    MachineHeartbeatDead,
    NotFound,
)
from bridge.domain.machines import (
    MachineLimits,
    check_activation,
    check_core_total,
    check_cores,
)
from bridge.domain.model import License, Machine, UsageKind
from bridge.domain.ports import (
    ActivationUnitOfWork,
    Clock,
    StoreConflict,
    UnitOfWork,
    UnitOfWorkFactory,
)
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id
from bridge.service.license_machines import (
    CoreChange,
    limits_of,
    policy_of,
    record_core_change,
)

log = structlog.get_logger(__name__)

REAPER = Principal(Role.ADMIN, "heartbeat")  # the actor of a reaped machine's ledger entry


class MachineService:
    """The machine use cases. ``sinks`` are the names of the enabled outbox sinks."""

    def __init__(self, uows: UnitOfWorkFactory, clock: Clock, sinks: Sequence[str] = ()) -> None:
        self._uows = uows
        self._clock = clock
        self._sinks = tuple(sinks)

    # Writes -----------------------------------------------------------------------------------
    def activate(
        self,
        principal: Principal,
        command: NewMachine,
        request_id: str | None = None,
        answer: Answer[Machine] = ignore,
    ) -> Machine:
        """An activation in a transaction of its own (``activate_in``)."""
        try:
            with self._uows(write=True) as uow:
                machine = self.activate_in(uow, principal, command, request_id, answer)
                uow.commit()
        except StoreConflict:  # the unique index, should a fingerprint race the lock
            raise FingerprintTaken from None
        return machine

    def activate_in(
        self,
        uow: ActivationUnitOfWork,
        principal: Principal,
        command: NewMachine,
        request_id: str | None = None,
        answer: Answer[Machine] = ignore,
    ) -> Machine:
        """Activate a machine in ``uow`` (its own transaction, or a savepoint of a
        ``BatchWriter`` batch), answering before the commit: an answer that cannot be built
        undoes the activation."""
        fingerprint = check_fingerprint(command.fingerprint)
        cores = check_cores(command.cores)
        name = check_text(command.name, Field.NAME)
        platform = check_text(command.platform, Field.PLATFORM)
        hostname = check_text(command.hostname, Field.HOSTNAME)
        now = self._clock.now()
        license = self._locked_license(uow, principal, command.license_ref)
        if uow.machines.fingerprint_taken(license.id, fingerprint):
            raise FingerprintTaken
        tally = uow.machines.tally(license.id)
        policy = policy_of(uow, license)
        check_activation(MachineLimits.of(policy, license), tally, cores)
        last, due = policy.heartbeat.at_activation(now)
        machine = Machine(
            id=new_id(),
            license_id=license.id,
            fingerprint=fingerprint,
            cores=cores,
            name=name,
            platform=platform,
            hostname=hostname,
            metadata=command.metadata or {},
            created=now,
            updated=now,
            last_heartbeat=last,
            next_heartbeat=due,
            # What reading it back would join in (its document shows them).
            product_id=policy.product_id,
            heartbeat=policy.heartbeat,
        )
        uow.machines.add(machine)
        change = CoreChange(
            license.id,
            machine.id,
            UsageKind.ACTIVATE,
            tally.cores,
            tally.cores + (cores or 0),
            principal.actor,
            request_id,
        )
        record_core_change(uow, change, now, self._sinks)
        answer(machine)
        log.debug("machine_activated", license_id=license.id, machine_id=machine.id, cores=cores)
        return machine

    def update(
        self,
        principal: Principal,
        machine_id: str,
        patch: MachinePatch,
        request_id: str | None = None,
        answer: Answer[Machine] = ignore,
    ) -> Machine:
        """Descriptive fields and ``cores``; raising the cores is checked against the limit."""
        action = MachineAction.UPDATE if patch.cores is UNSET else MachineAction.CHANGE_CORES
        for text, field in (
            (patch.name, Field.NAME),
            (patch.platform, Field.PLATFORM),
            (patch.hostname, Field.HOSTNAME),
        ):
            if text is not UNSET:
                check_text(text, field)
        now = self._clock.now()
        with self._uows(write=True) as uow:
            machine, license = self._locked_machine(uow, principal, machine_id, action)
            cores = machine.cores
            if patch.cores is not UNSET and patch.cores != machine.cores:
                cores = check_cores(patch.cores)
                tally = uow.machines.tally(license.id)
                after = tally.cores - (machine.cores or 0) + (cores or 0)
                if after > tally.cores:
                    check_core_total(limits_of(uow, license), after)
                change = CoreChange(
                    license.id,
                    machine.id,
                    UsageKind.CORES,
                    tally.cores,
                    after,
                    principal.actor,
                    request_id,
                )
                record_core_change(uow, change, now, self._sinks)
            machine = dataclasses.replace(
                machine,
                cores=cores,
                name=given(patch.name, machine.name),
                platform=given(patch.platform, machine.platform),
                hostname=given(patch.hostname, machine.hostname),
                metadata=machine.metadata if patch.metadata is UNSET else patch.metadata or {},
                updated=now,
            )
            uow.machines.update(machine)
            answer(machine)
            uow.commit()
        return machine

    def deactivate(
        self, principal: Principal, machine_id: str, request_id: str | None = None
    ) -> None:
        now = self._clock.now()
        with self._uows(write=True) as uow:
            machine, license = self._locked_machine(
                uow, principal, machine_id, MachineAction.DEACTIVATE
            )
            self._remove(uow, machine, principal.actor, now, request_id)
            uow.commit()
        log.debug("machine_deactivated", license_id=license.id, machine_id=machine.id)

    def ping(
        self, principal: Principal, machine_id: str, answer: Answer[Machine] = ignore
    ) -> Machine:
        """A heartbeat: the machine must ping again within its policy's heartbeatDuration. A dead
        machine is resurrected if its policy's resurrection strategy allows, else 422
        MACHINE_HEARTBEAT_DEAD (Keygen)."""
        now = self._clock.now()
        with self._uows(write=True) as uow:
            machine, _ = self._locked_machine(uow, principal, machine_id, MachineAction.PING)
            terms = machine.heartbeat
            dead = machine.heartbeat_status(now) == "DEAD"
            if dead and not terms.may_revive(machine.next_heartbeat, now):
                raise MachineHeartbeatDead
            due = terms.next_due(now)
            machine = machine.replace(last_heartbeat=now, next_heartbeat=due, updated=now)
            uow.machines.update(machine)
            machine = machine.replace(resurrected=dead)
            answer(machine)
            uow.commit()
        return machine

    def reap_dead_machines(self, now: datetime | None = None, *, limit: int = 1000) -> int:
        """Deactivate the machines whose heartbeat is overdue (at most ``limit``), each in its own
        transaction with its license held; a ping that wins the race keeps its machine."""
        now = now or self._clock.now()
        with self._uows() as uow:
            candidates = uow.machines.dead(now, limit)
        reaped = 0
        for candidate in candidates:
            with self._uows(write=True) as uow:
                uow.licenses.lock(candidate.license_id)
                machine = uow.machines.get(candidate.id)
                if (
                    machine is None
                    or machine.next_heartbeat is None
                    or machine.next_heartbeat >= now
                ):
                    continue
                self._remove(uow, machine, REAPER.actor, now, None)
                uow.commit()
            reaped += 1
            log.info("machine_reaped", license_id=machine.license_id, machine_id=machine.id)
        return reaped

    # Reads ------------------------------------------------------------------------------------
    def get(self, principal: Principal, machine_id: str, license_ref: str | None = None) -> Machine:
        """The machine by id or fingerprint (Keygen's alias), within ``license_ref`` if given."""
        with self._uows() as uow:
            license_id = None
            if license_ref is not None:
                license = uow.licenses.find(license_ref)
                if license is None or not can_see_license(principal, license):
                    raise NotFound.resource("license", license_ref)
                license_id = license.id
            machine, _ = visible_machine(uow, principal, machine_id, MachineAction.READ, license_id)
        return machine

    def list(
        self,
        principal: Principal,
        page: PageRequest,
        license_ref: str | None,
        *,
        strict_license: bool = False,
        fingerprint: str | None = None,
    ) -> Page[Machine]:
        """Every machine the bearer can see, or one license's (``?license=`` id or key; with
        ``strict_license``, as ``/licenses/{id}/machines``, a license out of scope is 404)."""
        product_id = principal.id if principal.role is Role.PRODUCT else None
        license_id = principal.id if principal.role is Role.LICENSE else None
        with self._uows() as uow:
            if license_ref is not None:
                license = uow.licenses.find(license_ref)
                if license is None or not can_see_license(principal, license):
                    if strict_license:
                        raise NotFound.resource("license", license_ref)
                    return Page([], 0, page)
                license_id = license.id
            items, total = uow.machines.list(
                offset=page.offset,
                limit=page.size,
                license_id=license_id,
                product_id=product_id,
                fingerprint=fingerprint,
            )
        return Page(items, total, page)

    # Helpers ----------------------------------------------------------------------------------
    def _locked_license(
        self, uow: ActivationUnitOfWork, principal: Principal, license_ref: str | None
    ) -> License:
        license = uow.licenses.find(license_ref) if license_ref else None
        if license is None or not can_see_license(principal, license):
            raise LicenseNotFound
        if not uow.licenses.lock(license.id):
            raise LicenseNotFound
        return license

    def _locked_machine(
        self, uow: UnitOfWork, principal: Principal, machine_ref: str, action: MachineAction
    ) -> tuple[Machine, License]:
        """The machine, read again once its license is held (it may have changed meanwhile)."""
        found, license = visible_machine(uow, principal, machine_ref, action)
        uow.licenses.lock(license.id)
        machine = uow.machines.get(found.id)
        if machine is None:
            raise NotFound.resource("machine", machine_ref)
        return machine, license

    def _remove(
        self,
        uow: UnitOfWork,
        machine: Machine,
        actor: str,
        now: datetime,
        request_id: str | None,
    ) -> None:
        tally = uow.machines.tally(machine.license_id)
        uow.machines.delete(machine.id)
        change = CoreChange(
            machine.license_id,
            machine.id,
            UsageKind.DEACTIVATE,
            tally.cores,
            tally.cores - (machine.cores or 0),
            actor,
            request_id,
        )
        record_core_change(uow, change, now, self._sinks)


def visible_machine(
    uow: UnitOfWork,
    principal: Principal,
    machine_ref: str,
    action: MachineAction,
    license_id: str | None = None,
) -> tuple[Machine, License]:
    """The machine by id, else by fingerprint among the machines the bearer can see (Keygen's
    ``FindByAliasService ... aliases: :fingerprint``), within ``license_id`` if given; 404
    outside the bearer's scope, 403 for an action its role lacks."""
    machine = uow.machines.get(machine_ref)
    if machine is not None and license_id is not None and machine.license_id != license_id:
        machine = None
    if machine is None:
        machine = uow.machines.with_fingerprint(
            machine_ref,
            license_id=principal.id if principal.role is Role.LICENSE else license_id,
            product_id=principal.id if principal.role is Role.PRODUCT else None,
        )
    license = uow.licenses.get(machine.license_id) if machine is not None else None
    if machine is None or license is None:
        raise NotFound.resource("machine", machine_ref)
    authorize_machine(principal, license, action, machine_ref)
    return machine, license
