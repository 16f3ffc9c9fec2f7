"""Machines activated on licenses: every statement on their table, and the row mapper.

SQLAlchemy Core (``bridge.store.tables``): activations are rare next to usage changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, literal, select, update
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.machines import MachineTally
from bridge.domain.model import HeartbeatTerms, Machine
from bridge.store.tables import licenses, machines, policies

# A machine is read with its license's product and policy terms, which its document shows.
_SOURCE = machines.join(licenses, licenses.c.id == machines.c.license_id).join(
    policies, policies.c.id == licenses.c.policy_id
)
_SELECT = select(
    *machines.c,
    policies.c.product_id,
    policies.c.require_heartbeat,
    policies.c.heartbeat_duration,
    policies.c.heartbeat_cull_strategy,
    policies.c.heartbeat_resurrection_strategy,
    policies.c.heartbeat_basis,
).select_from(_SOURCE)


def _machine(row: RowMapping) -> Machine:
    return Machine(
        id=row["id"],
        license_id=row["license_id"],
        fingerprint=row["fingerprint"],
        cores=row["cores"],
        name=row["name"],
        platform=row["platform"],
        hostname=row["hostname"],
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
        last_heartbeat=row["last_heartbeat"],
        next_heartbeat=row["next_heartbeat"],
        last_check_out=row["last_check_out"],
        product_id=row["product_id"],
        heartbeat=HeartbeatTerms(
            bool(row["require_heartbeat"]),
            row["heartbeat_duration"],
            row["heartbeat_cull_strategy"],
            row["heartbeat_resurrection_strategy"],
            row["heartbeat_basis"],
        ),
    )


def _machine_values(m: Machine) -> dict[str, Any]:
    return {
        "id": m.id,
        "license_id": m.license_id,
        "fingerprint": m.fingerprint,
        "cores": m.cores,
        "name": m.name,
        "platform": m.platform,
        "hostname": m.hostname,
        "metadata": m.metadata,
        "created": m.created,
        "updated": m.updated,
        "last_heartbeat": m.last_heartbeat,
        "next_heartbeat": m.next_heartbeat,
    }


class SqlMachines:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, machine: Machine) -> None:
        self._conn.execute(insert(machines).values(_machine_values(machine)))

    def get(self, machine_id: str) -> Machine | None:
        query = _SELECT.where(machines.c.id == machine_id)
        found = self._conn.execute(query).mappings().first()
        return _machine(found) if found else None

    def fingerprint_taken(self, license_id: str, fingerprint: str) -> bool:
        where = and_(machines.c.license_id == license_id, machines.c.fingerprint == fingerprint)
        return bool(self._conn.execute(select(exists().where(where))).scalar_one())

    def with_fingerprint(
        self, fingerprint: str, *, license_id: str | None, product_id: str | None
    ) -> Machine | None:
        query = _SELECT.where(machines.c.fingerprint == fingerprint)
        if license_id is not None:
            query = query.where(machines.c.license_id == license_id)
        if product_id is not None:
            query = query.where(policies.c.product_id == product_id)
        query = query.order_by(machines.c.created, machines.c.id).limit(1)
        found = self._conn.execute(query).mappings().first()
        return _machine(found) if found else None

    def of_license(self, license_id: str) -> list[Machine]:
        query = _SELECT.where(machines.c.license_id == license_id)
        rows = self._conn.execute(query.order_by(machines.c.created)).mappings()
        return [_machine(r) for r in rows]

    def tally(self, license_id: str) -> MachineTally:
        query = select(func.count(), func.coalesce(func.sum(machines.c.cores), 0)).where(
            machines.c.license_id == license_id
        )
        count, cores = self._conn.execute(query).one()
        return MachineTally(int(count), int(cores))

    def update(self, machine: Machine) -> None:
        values = _machine_values(machine)
        self._conn.execute(update(machines).where(machines.c.id == machine.id).values(values))

    def delete(self, machine_id: str) -> None:
        self._conn.execute(delete(machines).where(machines.c.id == machine_id))

    def touch_checked_out(self, machine_id: str, now: datetime) -> None:
        """Keygen's lastCheckOut (never written by ``update``: a ping does not undo it)."""
        query = update(machines).where(machines.c.id == machine_id)
        self._conn.execute(query.values(last_check_out=now))

    def dead(self, now: datetime, limit: int) -> list[Machine]:
        query = (
            _SELECT.where(
                machines.c.next_heartbeat < now,
                policies.c.heartbeat_cull_strategy == "DEACTIVATE_DEAD",
            )
            .order_by(machines.c.next_heartbeat, machines.c.id)
            .limit(limit)
        )
        return [_machine(r) for r in self._conn.execute(query).mappings()]

    def list(
        self,
        *,
        offset: int,
        limit: int,
        license_id: str | None,
        product_id: str | None,
        fingerprint: str | None = None,
    ) -> tuple[list[Machine], int]:
        source = _SOURCE
        conditions = []
        if license_id is not None:
            conditions.append(machines.c.license_id == license_id)
        if product_id is not None:
            conditions.append(policies.c.product_id == product_id)
        if fingerprint is not None:
            conditions.append(machines.c.fingerprint == fingerprint)
        where = and_(literal(True), *conditions)
        query = _SELECT.where(where).order_by(machines.c.created, machines.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        count = select(func.count()).select_from(source).where(where)
        return [_machine(r) for r in rows], self._conn.execute(count).scalar_one()
