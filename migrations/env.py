"""Alembic environment for ng911 (``ng911 migrate``; ``alembic -c alembic.ini ...`` for developers).

Several nodes may start at once and all try to migrate: on PostgreSQL the whole upgrade runs in
one transaction that first takes ``pg_advisory_xact_lock(hashtext('alembic'))`` (waiting up to
``ADVISORY_LOCK_WAIT``), so the nodes take turns and every one after the first finds the schema
at head and does nothing. Inside the lock, ``lock_timeout`` and ``statement_timeout`` keep a
migration from queueing behind -- and then blocking -- a live node's writes for long: a DDL
statement that cannot get its table lock in ``LOCK_TIMEOUT`` fails, and the migration is rerun.

The connection comes from ``config.attributes["connection"]`` when the code drives Alembic
(``ng911.store.db.migrate``), else from ``sqlalchemy.url`` / ``$NG911_DATABASE_URL``.
"""
from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool, text

from ng911.store.db import engine_for, normalise_url
from ng911.store.models import metadata

ADVISORY_LOCK_WAIT = "60s"
LOCK_TIMEOUT = "4s"
STATEMENT_TIMEOUT = "60s"

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("NG911_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set NG911_DATABASE_URL (or sqlalchemy.url)")
    return url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = normalise_url(_url())
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.get_backend_name() == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # ng911's SQLite engine emits a real BEGIN, so SQLite DDL is transactional too
    _configure(connection=connection, render_as_batch=sqlite,
               transactional_ddl=True if sqlite else None)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL lock_timeout = '{ADVISORY_LOCK_WAIT}'"))
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('alembic'))"))
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_for(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
