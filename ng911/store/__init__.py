"""Call state persistence (DESIGN "State and persistence").

- ``store``: the ``CallStore`` contract and ``SqlStore``, the write-behind store (one writer
  thread, batched transactions, retried forever across a database outage, fenced by owner).
- ``memory``: ``MemoryStore`` / ``NullStore``, its twins for tests and database-less runs.
- ``models``: the schema (SQLAlchemy 2 declarative); ``db``: engines, ``migrate`` (Alembic,
  ``migrations/`` at the top of the tree) and ``schema_status``.
"""
from ng911.store.db import SchemaStatus, engine_for, migrate, schema_status
from ng911.store.memory import MemoryStore, NullStore
from ng911.store.store import CallStore, Owner, SqlStore

__all__ = [
    "CallStore", "MemoryStore", "NullStore", "Owner", "SchemaStatus", "SqlStore",
    "engine_for", "migrate", "schema_status",
]
