"""Persistence: the tables, one module per aggregate, the unit of work and the migrations.

The only package that imports SQLAlchemy. Its layout:

- ``uow.py``: ``SqlUnitOfWork``, the one transaction manager (writer lock, ``BEGIN IMMEDIATE``,
  savepoints, error translation, invalidation of a broken connection). The usage path sees the
  same class through the narrower ``bridge.domain.ports.UsageUnitOfWork``.
- One module per aggregate, holding every statement on its tables and exactly one row mapper
  per row shape, reading columns by name: ``licenses.py`` (a license and its effective terms,
  read by one projection; the usage counters), ``ledger.py``, ``outbox.py``,
  ``idempotency.py``, ``tokens.py``, ``periods.py`` (rollovers, set-based), ``catalog.py``
  (products), ``policies.py``, ``machines.py``, ``reconcile.py``, ``webhooks.py`` (the webhook
  inbox, subject index and effects).
- ``sql.py``: the one SQL helper of the cursor-level modules (parameter style, the SQLite
  datetime text and JSON encodings, rows as mappings); ``tables.py`` and ``types.py``: the
  SQLModel tables and their column types; ``migrations/``: Alembic.

The access style is decided per table, not per call. Tables a usage change, a token look-up,
the relay or a machine activation touch (licenses, usage_ledger, outbox, idempotency_keys,
tokens, usage_periods, policies, machines) are written as plain SQL in their module and run on
the unit of work's driver cursor through ``sql.py``: through SQLAlchemy's ``Connection.execute``
each statement costs about five times what the database spends on it
(``bench/store_sqlite.py``). Every other table (products, reconciliations, the webhook and
Keygen tables) goes through SQLAlchemy Core on the same connection and transaction. Reports
that join several aggregates (reconciliation) are Core reads in the module that uses them,
mapping the joined rows with the owning modules' mappers.
"""
