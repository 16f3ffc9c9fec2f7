"""SQL repositories over one connection. They never commit: the unit of work does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.delivery import (
    DeadLetter,
    OutboxItem,
    OutboxStatus,
    Reason,
    SinkStatus,
)
from bridge.domain.machines import MachineTally
from bridge.domain.model import (
    USES_KINDS,
    ExpirationBasis,
    License,
    Machine,
    OverageStrategy,
    Policy,
    Product,
    UsageEntry,
    UsageKind,
)
from bridge.domain.periods import PeriodRule, rule_from_json
from bridge.store.hotpath import HotPath, entry_row
from bridge.store.tables import (
    IdempotencyRow,
    LicenseRow,
    MachineRow,
    OutboxRow,
    PolicyRow,
    ProductRow,
    TokenRow,
    UsageEntryRow,
)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


products = _table(ProductRow)
policies = _table(PolicyRow)
licenses = _table(LicenseRow)
tokens = _table(TokenRow)
ledger = _table(UsageEntryRow)
outbox = _table(OutboxRow)
idempotency = _table(IdempotencyRow)
machines = _table(MachineRow)


# Products -----------------------------------------------------------------------------------
def _product(row: RowMapping) -> Product:
    return Product(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
    )


def _product_values(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "url": p.url,
        "metadata": p.metadata,
        "created": p.created,
        "updated": p.updated,
    }


class SqlProducts:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, product: Product) -> None:
        self._conn.execute(insert(products).values(_product_values(product)))

    def get(self, product_id: str) -> Product | None:
        row = self._conn.execute(select(products).where(products.c.id == product_id)).mappings()
        found = row.first()
        return _product(found) if found else None

    def list(self, *, offset: int, limit: int, only: str | None) -> tuple[list[Product], int]:
        where = products.c.id == only if only is not None else literal(True)
        query = select(products).where(where).order_by(products.c.created, products.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        total = self._conn.execute(select(func.count()).select_from(products).where(where))
        return [_product(r) for r in rows], total.scalar_one()

    def update(self, product: Product) -> None:
        values = _product_values(product)
        self._conn.execute(update(products).where(products.c.id == product.id).values(values))

    def delete(self, product_id: str) -> None:
        self._conn.execute(tokens.delete().where(tokens.c.bearer_id == product_id))
        self._conn.execute(delete(products).where(products.c.id == product_id))

    def has_policies(self, product_id: str) -> bool:
        query = select(exists().where(policies.c.product_id == product_id))
        return bool(self._conn.execute(query).scalar_one())


# Policies -----------------------------------------------------------------------------------
def _policy(row: RowMapping) -> Policy:
    return Policy(
        id=row["id"],
        product_id=row["product_id"],
        name=row["name"],
        max_uses=row["max_uses"],
        max_machines=row["max_machines"],
        max_cores=row["max_cores"],
        floating=row["floating"],
        strict=row["strict"],
        overage_strategy=OverageStrategy(row["overage_strategy"]),
        protected=row["protected"],
        duration=row["duration"],
        expiration_basis=ExpirationBasis(row["expiration_basis"]),
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
        usage_period=rule_from_json(row["usage_period"]),
        heartbeat_duration=row["heartbeat_duration"],
    )


def _policy_values(p: Policy) -> dict[str, Any]:
    return {
        "id": p.id,
        "product_id": p.product_id,
        "name": p.name,
        "max_uses": p.max_uses,
        "max_machines": p.max_machines,
        "max_cores": p.max_cores,
        "floating": p.floating,
        "strict": p.strict,
        "overage_strategy": p.overage_strategy.value,
        "protected": p.protected,
        "duration": p.duration,
        "heartbeat_duration": p.heartbeat_duration,
        "expiration_basis": p.expiration_basis.value,
        "metadata": p.metadata,
        "created": p.created,
        "updated": p.updated,
        "usage_period": _rule_json(p.usage_period),
    }


def _rule_json(rule: PeriodRule | None) -> str | None:
    return rule.to_json() if rule is not None else None


class SqlPolicies:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, policy: Policy) -> None:
        self._conn.execute(insert(policies).values(_policy_values(policy)))

    def get(self, policy_id: str) -> Policy | None:
        found = (
            self._conn.execute(select(policies).where(policies.c.id == policy_id))
            .mappings()
            .first()
        )
        return _policy(found) if found else None

    def list(self, *, offset: int, limit: int, product_id: str | None) -> tuple[list[Policy], int]:
        where = policies.c.product_id == product_id if product_id is not None else literal(True)
        query = select(policies).where(where).order_by(policies.c.created, policies.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        total = self._conn.execute(select(func.count()).select_from(policies).where(where))
        return [_policy(r) for r in rows], total.scalar_one()

    def update(self, policy: Policy) -> None:
        values = _policy_values(policy)
        self._conn.execute(update(policies).where(policies.c.id == policy.id).values(values))

    def delete(self, policy_id: str) -> None:
        self._conn.execute(delete(policies).where(policies.c.id == policy_id))

    def has_licenses(self, policy_id: str) -> bool:
        query = select(exists().where(licenses.c.policy_id == policy_id))
        return bool(self._conn.execute(query).scalar_one())


# Licenses -----------------------------------------------------------------------------------
_license_columns = (
    *licenses.c,
    policies.c.product_id,
    policies.c.max_uses.label("policy_max_uses"),
    policies.c.max_machines.label("policy_max_machines"),
    policies.c.max_cores.label("policy_max_cores"),
    case(
        (policies.c.expiration_basis == ExpirationBasis.FROM_FIRST_USE.value, policies.c.duration),
        else_=None,
    ).label("policy_first_use_duration"),
    policies.c.usage_period.label("policy_usage_period"),
    policies.c.strict.label("policy_strict"),
    policies.c.floating.label("policy_floating"),
)
_license_select = select(*_license_columns).join(policies, policies.c.id == licenses.c.policy_id)


def _license(row: RowMapping) -> License:
    return License(
        id=row["id"],
        key=row["key"],
        name=row["name"],
        policy_id=row["policy_id"],
        product_id=row["product_id"],
        uses=row["uses"],
        max_uses_override=row["max_uses_override"],
        policy_max_uses=row["policy_max_uses"],
        policy_first_use_duration=row["policy_first_use_duration"],
        protected=row["protected"],
        suspended=row["suspended"],
        expiry=row["expiry"],
        metadata=row["metadata"],
        created=row["created"],
        updated=row["updated"],
        usage_period_override=rule_from_json(row["usage_period"]),
        policy_usage_period=rule_from_json(row["policy_usage_period"]),
        period_anchor=row["period_anchor"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        period_open_uses=row["period_open_uses"],
        max_machines_override=row["max_machines_override"],
        max_cores_override=row["max_cores_override"],
        policy_max_machines=row["policy_max_machines"],
        policy_max_cores=row["policy_max_cores"],
        policy_strict=bool(row["policy_strict"]),
        policy_floating=bool(row["policy_floating"]),
    )


def _license_values(lic: License) -> dict[str, Any]:
    return {
        "id": lic.id,
        "key": lic.key,
        "name": lic.name,
        "policy_id": lic.policy_id,
        "uses": lic.uses,
        "max_uses_override": lic.max_uses_override,
        "max_machines_override": lic.max_machines_override,
        "max_cores_override": lic.max_cores_override,
        "protected": lic.protected,
        "suspended": lic.suspended,
        "expiry": lic.expiry,
        "metadata": lic.metadata,
        "created": lic.created,
        "updated": lic.updated,
        "usage_period": _rule_json(lic.usage_period_override),
        "period_anchor": lic.period_anchor,
        "period_start": lic.period_start,
        "period_end": lic.period_end,
        "period_open_uses": lic.period_open_uses,
    }


class SqlLicenses:
    def __init__(self, conn: Connection, hot: HotPath, cursor: Any) -> None:
        self._conn = conn
        self._hot = hot
        self._cursor = cursor

    def add(self, license: License) -> None:
        self._conn.execute(insert(licenses).values(_license_values(license)))

    def get(self, license_id: str) -> License | None:
        query = _license_select.where(licenses.c.id == license_id)
        found = self._conn.execute(query).mappings().first()
        return _license(found) if found else None

    def find(self, id_or_key: str) -> License | None:
        """By id or key; an id match wins over a key equal to another license's id."""
        return self._hot.find_license(self._cursor, id_or_key)

    def key_exists(self, key: str) -> bool:
        query = select(exists().where(licenses.c.key == key))
        return bool(self._conn.execute(query).scalar_one())

    def list(
        self, *, offset: int, limit: int, product_id: str | None, policy_id: str | None
    ) -> tuple[list[License], int]:
        conditions = []
        if product_id is not None:
            conditions.append(policies.c.product_id == product_id)
        if policy_id is not None:
            conditions.append(licenses.c.policy_id == policy_id)
        where = and_(literal(True), *conditions)
        query = _license_select.where(where).order_by(licenses.c.created, licenses.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        count = (
            select(func.count())
            .select_from(licenses.join(policies, policies.c.id == licenses.c.policy_id))
            .where(where)
        )
        return [_license(r) for r in rows], self._conn.execute(count).scalar_one()

    def update(self, license: License) -> None:
        values = _license_values(license)
        # Only the usage actions and period rollovers write the counter and the open period.
        for name in ("uses", "period_start", "period_end", "period_open_uses"):
            del values[name]
        self._conn.execute(update(licenses).where(licenses.c.id == license.id).values(values))

    def delete(self, license_id: str) -> None:
        self._conn.execute(tokens.delete().where(tokens.c.bearer_id == license_id))
        self._conn.execute(delete(machines).where(machines.c.license_id == license_id))
        self._conn.execute(delete(licenses).where(licenses.c.id == license_id))

    def lock(self, license_id: str) -> bool:
        # FOR UPDATE is not rendered on SQLite, whose write transaction holds the database.
        query = select(licenses.c.id).where(licenses.c.id == license_id).with_for_update()
        return self._conn.execute(query).first() is not None


# Machines -----------------------------------------------------------------------------------
# A machine is read with its license's product and policy terms, which its document shows.
_machine_source = machines.join(licenses, licenses.c.id == machines.c.license_id).join(
    policies, policies.c.id == licenses.c.policy_id
)
_machine_select = select(
    *machines.c,
    policies.c.product_id,
    policies.c.heartbeat_duration.label("policy_heartbeat_duration"),
).select_from(_machine_source)


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
        product_id=row["product_id"],
        policy_heartbeat_duration=row["policy_heartbeat_duration"],
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
        query = _machine_select.where(machines.c.id == machine_id)
        found = self._conn.execute(query).mappings().first()
        return _machine(found) if found else None

    def fingerprint_taken(self, license_id: str, fingerprint: str) -> bool:
        where = and_(machines.c.license_id == license_id, machines.c.fingerprint == fingerprint)
        return bool(self._conn.execute(select(exists().where(where))).scalar_one())

    def with_fingerprint(
        self, fingerprint: str, *, license_id: str | None, product_id: str | None
    ) -> Machine | None:
        query = _machine_select.where(machines.c.fingerprint == fingerprint)
        if license_id is not None:
            query = query.where(machines.c.license_id == license_id)
        if product_id is not None:
            query = query.where(policies.c.product_id == product_id)
        query = query.order_by(machines.c.created, machines.c.id).limit(1)
        found = self._conn.execute(query).mappings().first()
        return _machine(found) if found else None

    def of_license(self, license_id: str) -> list[Machine]:
        query = _machine_select.where(machines.c.license_id == license_id)
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

    def dead(self, now: datetime, limit: int) -> list[Machine]:
        query = (
            _machine_select.where(machines.c.next_heartbeat < now)
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
        source = _machine_source
        conditions = []
        if license_id is not None:
            conditions.append(machines.c.license_id == license_id)
        if product_id is not None:
            conditions.append(policies.c.product_id == product_id)
        if fingerprint is not None:
            conditions.append(machines.c.fingerprint == fingerprint)
        where = and_(literal(True), *conditions)
        query = _machine_select.where(where).order_by(machines.c.created, machines.c.id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        count = select(func.count()).select_from(source).where(where)
        return [_machine(r) for r in rows], self._conn.execute(count).scalar_one()


# Tokens -------------------------------------------------------------------------------------
class SqlTokens:
    def __init__(self, conn: Connection, hot: HotPath, cursor: Any) -> None:
        self._conn = conn
        self._hot = hot
        self._cursor = cursor

    def add(self, token_id: str, digest: str, role: str, bearer_id: str, now: datetime) -> None:
        values = {
            "id": token_id,
            "digest": digest,
            "role": role,
            "bearer_id": bearer_id,
            "created": now,
        }
        self._conn.execute(insert(tokens).values(values))

    def find(self, digest: str) -> tuple[str, str] | None:
        return self._hot.find_token(self._cursor, digest)

    def any_admin(self) -> bool:
        query = select(exists().where(tokens.c.role == "admin"))
        return bool(self._conn.execute(query).scalar_one())

    def delete_for(self, bearer_id: str) -> None:
        self._conn.execute(tokens.delete().where(tokens.c.bearer_id == bearer_id))


# Ledger, outbox, idempotency ----------------------------------------------------------------
def entry_from_row(row: RowMapping) -> UsageEntry:
    return UsageEntry(
        id=row["id"],
        license_id=row["license_id"],
        kind=UsageKind(row["kind"]),
        delta=row["delta"],
        uses_before=row["uses_before"],
        uses_after=row["uses_after"],
        actor=row["actor"],
        idempotency_key=row["idempotency_key"],
        request_id=row["request_id"],
        occurred_at=row["occurred_at"],
        seq=row["seq"],
        machine_id=row["machine_id"],
    )


class SqlIdempotencyKeys:
    """The retention of stored Idempotency-Key answers."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def purge(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` keys stored before ``before``, oldest first; how many."""
        oldest = (
            select(idempotency.c.scope, idempotency.c.key)
            .where(idempotency.c.created < before)
            .order_by(idempotency.c.created)
            .limit(limit)
        )
        query = delete(idempotency).where(
            tuple_(idempotency.c.scope, idempotency.c.key).in_(oldest)
        )
        return int(self._conn.execute(query).rowcount)


class SqlLedger:
    """The ledger: usage changes are written by ``bridge.store.usage_uow``, machine changes
    here."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, entry: UsageEntry) -> None:
        self._conn.execute(insert(ledger).values(entry_row(entry, entry.occurred_at)))

    def history(self, license_id: str, *, offset: int, limit: int) -> tuple[list[UsageEntry], int]:
        where = ledger.c.license_id == license_id
        query = select(ledger).where(where).order_by(ledger.c.seq.desc())
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        total = self._conn.execute(select(func.count()).select_from(ledger).where(where))
        return [entry_from_row(r) for r in rows], total.scalar_one()

    def total(self, license_id: str) -> int:
        """The sum of the license's usage deltas (machine entries count cores, not uses)."""
        query = select(func.coalesce(func.sum(ledger.c.delta), 0)).where(
            ledger.c.license_id == license_id,
            ledger.c.kind.in_([k.value for k in USES_KINDS]),
        )
        return int(self._conn.execute(query).scalar_one())


class SqlOutbox:
    def __init__(self, conn: Connection, hot: HotPath, cursor: Any) -> None:
        self._conn = conn
        self._hot = hot
        self._cursor = cursor

    def add(self, entry: UsageEntry, sinks: Sequence[str]) -> None:
        rows = [
            {
                "entry_id": entry.id,
                "sink": sink,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": entry.occurred_at,
                "created": entry.occurred_at,
            }
            for sink in sinks
        ]
        if rows:
            self._conn.execute(insert(outbox), rows)

    def pending_count(self) -> int:
        query = select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
        return int(self._conn.execute(query).scalar_one())

    def claim(
        self, sink: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[OutboxItem]:
        """Take up to ``limit`` due items of ``sink`` (pending, or in flight with an expired
        lease) and lease them until ``lease_until``. Concurrent relays on PostgreSQL skip each
        other's rows; on SQLite one relay runs per database file."""
        return self._hot.claim_outbox(self._cursor, sink, now, lease_until, limit)

    def mark(
        self,
        ids: Sequence[int],
        status: OutboxStatus,
        *,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self._hot.mark_outbox(self._cursor, ids, status, next_attempt_at, error, reason)

    def release(self, ids: Sequence[int], now: datetime) -> None:
        """Items still in flight back to pending, due ``now`` (their lease given up)."""
        query = (
            update(outbox)
            .where(outbox.c.id.in_(list(ids)), outbox.c.status == OutboxStatus.INFLIGHT)
            .values(status=OutboxStatus.PENDING, next_attempt_at=now)
        )
        self._conn.execute(query)

    def dead_letters(self, sink: str | None, *, offset: int, limit: int) -> list[DeadLetter]:
        """Dead-lettered items, oldest first, with the error that sent them there."""
        where = outbox.c.status == OutboxStatus.DEAD
        if sink is not None:
            where = and_(where, outbox.c.sink == sink)
        query = (
            select(
                outbox.c.id.label("item_id"),
                outbox.c.sink,
                outbox.c.attempts,
                outbox.c.last_error,
                outbox.c.reason,
                ledger,
            )
            .join(ledger, ledger.c.id == outbox.c.entry_id)
            .where(where)
            .order_by(outbox.c.id)
            .offset(offset)
            .limit(limit)
        )
        return [
            DeadLetter(
                OutboxItem(r["item_id"], r["sink"], r["attempts"], entry_from_row(r)),
                r["last_error"],
                Reason(r["reason"]) if r["reason"] else None,
            )
            for r in self._conn.execute(query).mappings()
        ]

    def requeue_dead(self, sink: str | None, ids: Sequence[int] | None, now: datetime) -> int:
        """Make dead letters pending again, due now, with their original entry ids."""
        where = outbox.c.status == OutboxStatus.DEAD
        if sink is not None:
            where = and_(where, outbox.c.sink == sink)
        if ids is not None:
            where = and_(where, outbox.c.id.in_(list(ids)))
        query = (
            update(outbox)
            .where(where)
            .values(status=OutboxStatus.PENDING, next_attempt_at=now, attempts=0, reason=None)
        )
        return int(self._conn.execute(query).rowcount)

    def status(self) -> list[SinkStatus]:
        """Counts per sink and status, by reason, and the creation time of the oldest
        undelivered item."""
        query = (
            select(
                outbox.c.sink,
                outbox.c.status,
                outbox.c.reason,
                func.count(),
                func.min(outbox.c.created),
            )
            .group_by(outbox.c.sink, outbox.c.status, outbox.c.reason)
            .order_by(outbox.c.sink, outbox.c.status)
        )
        groups: dict[tuple[str, str], list[tuple[str | None, int, datetime | None]]] = {}
        for sink, status, reason, count, oldest in self._conn.execute(query):
            groups.setdefault((sink, status), []).append((reason, count, oldest))
        return [
            SinkStatus(
                sink,
                OutboxStatus(status),
                sum(count for _r, count, _o in rows),
                min((oldest for _r, _c, oldest in rows if oldest is not None), default=None),
                {Reason(reason): count for reason, count, _o in rows if reason is not None},
            )
            for (sink, status), rows in groups.items()
        ]
