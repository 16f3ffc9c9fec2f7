"""Machines activated on licenses: every statement on their table, and the row mapper.

Cursor-level (``bridge.store.sql``): an activation runs ``fingerprint_taken``, ``tally``,
``add`` and ``get`` in its transaction, and building, compiling and caching SQLAlchemy Core
statements cost more than running them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.domain.machines import MachineTally
from bridge.domain.model import HeartbeatTerms, Machine
from bridge.store.sql import Sql, one, read_json, read_ts, total

# The machine's own columns, in the order of the table; ``last_check_out`` is written only by
# ``touch_checked_out`` (a ping's ``update`` does not undo it).
COLUMNS = (
    "id",
    "license_id",
    "fingerprint",
    "cores",
    "name",
    "platform",
    "hostname",
    "metadata",
    "last_heartbeat",
    "next_heartbeat",
    "last_check_out",
    "created",
    "updated",
)
_WRITTEN = tuple(c for c in COLUMNS if c != "last_check_out")
# A machine is read with its license's product and policy terms, which its document shows.
_POLICY_COLUMNS = (
    "product_id",
    "require_heartbeat",
    "heartbeat_duration",
    "heartbeat_cull_strategy",
    "heartbeat_resurrection_strategy",
    "heartbeat_basis",
)
_PROJECTION = (*COLUMNS, *_POLICY_COLUMNS)
_SOURCE = """
FROM machines m JOIN licenses l ON l.id = m.license_id JOIN policies p ON p.id = l.policy_id
"""
_SELECT = f"""
SELECT {", ".join([*(f"m.{c}" for c in COLUMNS), *(f"p.{c}" for c in _POLICY_COLUMNS)])}
{_SOURCE}"""


def _param(column: str) -> str:
    """The column's parameter (JSON is cast from text on PostgreSQL, see ``sql.py``)."""
    return f":{column}::JSON" if column == "metadata" else f":{column}"


_INSERT = f"""
INSERT INTO machines ({", ".join(_WRITTEN)}) VALUES ({", ".join(map(_param, _WRITTEN))})
"""  # noqa: S608 - only module constants are interpolated
_UPDATE = f"""
UPDATE machines SET {", ".join(f"{c} = {_param(c)}" for c in _WRITTEN if c != "id")}
WHERE id = :id
"""  # noqa: S608 - only module constants are interpolated
_GET = f"{_SELECT} WHERE m.id = :id"
_FINGERPRINT_TAKEN = """
SELECT 1 AS found FROM machines WHERE license_id = :license_id AND fingerprint = :fingerprint
"""
_OF_LICENSE = f"{_SELECT} WHERE m.license_id = :license_id ORDER BY m.created"
_TALLY = """
SELECT COUNT(*) AS count, COALESCE(SUM(cores), 0) AS cores FROM machines
WHERE license_id = :license_id
"""
_DELETE = "DELETE FROM machines WHERE id = :id"
_TOUCH_CHECKED_OUT = "UPDATE machines SET last_check_out = :now WHERE id = :id"
_DEAD = f"""{_SELECT}
WHERE m.next_heartbeat < :now AND p.heartbeat_cull_strategy = 'DEACTIVATE_DEAD'
ORDER BY m.next_heartbeat, m.id LIMIT :limit
"""
# The optional conditions of ``with_fingerprint`` and ``list``, by parameter.
_CONDITIONS = {
    "license_id": "m.license_id = :license_id",
    "product_id": "p.product_id = :product_id",
    "fingerprint": "m.fingerprint = :fingerprint",
}


def _machine(row: dict[str, Any]) -> Machine:
    return Machine(
        id=row["id"],
        license_id=row["license_id"],
        fingerprint=row["fingerprint"],
        cores=row["cores"],
        name=row["name"],
        platform=row["platform"],
        hostname=row["hostname"],
        metadata=read_json(row["metadata"]),
        created=read_ts(row["created"]),
        updated=read_ts(row["updated"]),
        last_heartbeat=read_ts(row["last_heartbeat"]),
        next_heartbeat=read_ts(row["next_heartbeat"]),
        last_check_out=read_ts(row["last_check_out"]),
        product_id=row["product_id"],
        heartbeat=HeartbeatTerms(
            bool(row["require_heartbeat"]),
            row["heartbeat_duration"],
            row["heartbeat_cull_strategy"],
            row["heartbeat_resurrection_strategy"],
            row["heartbeat_basis"],
        ),
    )


class MachineStatements:
    """The statements above in one dialect's parameter style (built once per engine)."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.insert = sql.style(_INSERT)
        self.update = sql.style(_UPDATE)
        self.get = sql.style(_GET)
        self.fingerprint_taken = sql.style(_FINGERPRINT_TAKEN)
        self.of_license = sql.style(_OF_LICENSE)
        self.tally = sql.style(_TALLY)
        self.delete = sql.style(_DELETE)
        self.touch_checked_out = sql.style(_TOUCH_CHECKED_OUT)
        self.dead = sql.style(_DEAD)
        self._filtered: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}

    def filtered(self, order: str, names: tuple[str, ...]) -> tuple[str, str]:
        """The page query (``order``, then LIMIT/OFFSET) and the count for the conditions
        ``names`` (keys of ``_CONDITIONS``), built once per combination."""
        key = (order, names)
        if key not in self._filtered:
            where = " AND ".join(["1 = 1", *(_CONDITIONS[n] for n in names)])
            page = f"{_SELECT} WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset"
            count = f"SELECT COUNT(*) AS total {_SOURCE} WHERE {where}"
            self._filtered[key] = (self.sql.style(page), self.sql.style(count))
        return self._filtered[key]


class SqlMachines:
    def __init__(self, st: MachineStatements, cursor: Any) -> None:
        self._st, self._sql, self._cursor = st, st.sql, cursor

    def _values(self, m: Machine) -> dict[str, Any]:
        ts = self._sql.ts
        return {
            "id": m.id,
            "license_id": m.license_id,
            "fingerprint": m.fingerprint,
            "cores": m.cores,
            "name": m.name,
            "platform": m.platform,
            "hostname": m.hostname,
            "metadata": self._sql.json(m.metadata),
            "last_heartbeat": ts(m.last_heartbeat),
            "next_heartbeat": ts(m.next_heartbeat),
            "created": ts(m.created),
            "updated": ts(m.updated),
        }

    def _machine(self, statement: str, params: dict[str, Any]) -> Machine | None:
        self._cursor.execute(statement, params)
        found = one(self._cursor, _PROJECTION)
        return _machine(found) if found is not None else None

    def _machines(self, statement: str, params: dict[str, Any]) -> list[Machine]:
        self._cursor.execute(statement, params)
        return [_machine(dict(zip(_PROJECTION, r, strict=True))) for r in self._cursor.fetchall()]

    def add(self, machine: Machine) -> None:
        self._cursor.execute(self._st.insert, self._values(machine))

    def get(self, machine_id: str) -> Machine | None:
        return self._machine(self._st.get, {"id": machine_id})

    def fingerprint_taken(self, license_id: str, fingerprint: str) -> bool:
        params = {"license_id": license_id, "fingerprint": fingerprint}
        self._cursor.execute(self._st.fingerprint_taken, params)
        return one(self._cursor, ("found",)) is not None

    def with_fingerprint(
        self, fingerprint: str, *, license_id: str | None, product_id: str | None
    ) -> Machine | None:
        params = {"fingerprint": fingerprint, "license_id": license_id, "product_id": product_id}
        names = tuple(n for n in _CONDITIONS if params[n] is not None)
        page, _ = self._st.filtered("m.created, m.id", names)
        return self._machine(page, {**params, "limit": 1, "offset": 0})

    def of_license(self, license_id: str) -> list[Machine]:
        return self._machines(self._st.of_license, {"license_id": license_id})

    def tally(self, license_id: str) -> MachineTally:
        self._cursor.execute(self._st.tally, {"license_id": license_id})
        row = one(self._cursor, ("count", "cores"))
        assert row is not None, "an aggregate has a row"
        return MachineTally(int(row["count"]), int(row["cores"]))

    def update(self, machine: Machine) -> None:
        self._cursor.execute(self._st.update, self._values(machine))

    def delete(self, machine_id: str) -> None:
        self._cursor.execute(self._st.delete, {"id": machine_id})

    def touch_checked_out(self, machine_id: str, now: datetime) -> None:
        """Keygen's lastCheckOut (never written by ``update``: a ping does not undo it)."""
        params = {"id": machine_id, "now": self._sql.ts(now)}
        self._cursor.execute(self._st.touch_checked_out, params)

    def dead(self, now: datetime, limit: int) -> list[Machine]:
        return self._machines(self._st.dead, {"now": self._sql.ts(now), "limit": limit})

    def list(
        self,
        *,
        offset: int,
        limit: int,
        license_id: str | None,
        product_id: str | None,
        fingerprint: str | None = None,
    ) -> tuple[list[Machine], int]:
        params = {"license_id": license_id, "product_id": product_id, "fingerprint": fingerprint}
        names = tuple(n for n in _CONDITIONS if params[n] is not None)
        page, count = self._st.filtered("m.created, m.id", names)
        items = self._machines(page, {**params, "offset": offset, "limit": limit})
        self._cursor.execute(count, params)
        return items, total(self._cursor)
