"""Engines and schema management: ``engine_for``, ``migrate``, ``schema_status``.

Database URLs:

- ``postgresql://user@host:port/db`` (also ``postgres://``, ``postgresql+psycopg2://``): the
  cluster database. psycopg2, ``pool_pre_ping``, a 3 s connect timeout, a server-side
  ``statement_timeout`` and TCP keepalive / ``tcp_user_timeout`` so that a dead network path
  surfaces as an error within seconds instead of a socket read that hangs for minutes.
- ``sqlite:///path/to/file``: the single-node, zero-setup database. WAL journal (readers do not
  block the writer thread), ``foreign_keys=ON``, ``synchronous=NORMAL``, a 5 s busy timeout,
  ``check_same_thread=False`` (the writer thread and readers share the pool) and a real
  ``BEGIN`` per transaction (pysqlite's own transaction handling is turned off, see the
  SQLAlchemy SQLite notes on "Serializable isolation"). In-memory SQLite is refused: use
  ``MemoryStore``.

Migrations are Alembic's, in ``migrations/`` at the top of the source tree (next to the
``ng911`` package). They are found relative to this file, which works from a source checkout
and from the editable install ``scripts/setup.sh`` makes; ``NG911_MIGRATIONS`` overrides the
location (e.g. for a wheel install that ships them elsewhere). ``alembic.ini`` at the top of
the tree is for developers running the ``alembic`` command; the code configures Alembic
programmatically and never reads it.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 3


def normalise_url(url: str) -> sa.URL:
    """Parse a database URL; ``postgres://`` and ``postgresql://`` mean psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        if u.get_driver_name() not in ("psycopg2",):
            u = u.set(drivername="postgresql+psycopg2")
    elif u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ValueError(
                "in-memory SQLite cannot be shared by the writer thread: "
                "use sqlite:///path/to/file or the MemoryStore")
    else:
        raise ValueError(f"unsupported database URL scheme: {u.drivername!r} "
                         "(use postgresql://... or sqlite:///path)")
    return u


def engine_for(url: str | sa.URL, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
               **kwargs: Any) -> Engine:
    """An Engine tuned for the store (see the module docstring)."""
    u = normalise_url(url) if isinstance(url, str) else url
    if u.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            u, connect_args={"check_same_thread": False, "timeout": 5.0}, **kwargs)
        _sqlite_setup(engine)
        return engine
    connect_args = _pg_connect_args(statement_timeout_ms)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 4)
        kwargs.setdefault("max_overflow", 4)
    return sa.create_engine(u, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _pg_connect_args(statement_timeout_ms: int) -> dict[str, Any]:
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "ng911",
        "options": f"-c statement_timeout={int(statement_timeout_ms)}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": 10000,
    }


def dbapi_connect(url: str | sa.URL, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Any:
    """A psycopg2 connection of its own (autocommit), tuned like the store's, outside any pool:
    for a session whose life means something (advisory locks, LISTEN)."""
    import psycopg2

    u = normalise_url(url) if isinstance(url, str) else url
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                            dbname=u.database, **_pg_connect_args(statement_timeout_ms))
    conn.autocommit = True
    return conn


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN; we emit it in "begin" below
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")


# --- Alembic --------------------------------------------------------------------------------


def migrations_dir() -> Path:
    """Where the Alembic environment lives (``env.py`` + ``versions/``)."""
    override = os.environ.get("NG911_MIGRATIONS")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise RuntimeError(
        "ng911 migrations not found (looked in: "
        + ", ".join(str(p) for p in candidates)
        + "); install from a source checkout (pip install -e .) or set NG911_MIGRATIONS")


def alembic_config(url: str | None = None, *, script_location: str | Path | None = None) -> Any:
    """An Alembic ``Config`` built in code: no ini file needed."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location or migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # configparser interpolates '%': a percent-encoded password must be doubled
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    return cfg


# Alembic keeps its running environment in module globals (``alembic.context``): one
# migration at a time per process. Across processes (nodes) the advisory lock in env.py rules.
_alembic_lock = threading.Lock()


def migrate(url: str, revision: str = "head", *,
            script_location: str | Path | None = None) -> None:
    """Upgrade the schema (Alembic ``upgrade``). Safe to run from several nodes at once: on
    PostgreSQL ``migrations/env.py`` serialises them on an advisory lock."""
    from alembic import command

    _run_alembic(url, lambda cfg: command.upgrade(cfg, revision), script_location)


def downgrade(url: str, revision: str, *, script_location: str | Path | None = None) -> None:
    """Alembic ``downgrade`` (operators and tests; ``ng911 serve`` never goes back)."""
    from alembic import command

    _run_alembic(url, lambda cfg: command.downgrade(cfg, revision), script_location)


def _run_alembic(url: str, action: Callable[[Any], None],
                 script_location: str | Path | None) -> None:
    cfg = alembic_config(url, script_location=script_location)
    engine = engine_for(url)
    try:
        with _alembic_lock, engine.connect() as conn:
            cfg.attributes["connection"] = conn
            action(cfg)
            conn.commit()
    finally:
        engine.dispose()


class SchemaStatus(NamedTuple):
    """``state`` is one of:

    - ``"current"``: the database is at the code's head revision;
    - ``"behind"``: at an older revision of ours -- run ``ng911 migrate``;
    - ``"empty"``: never migrated (no ``alembic_version`` row);
    - ``"unknown"``: at a revision this code does not know (newer code migrated it, or the
      database belongs to something else) -- do not serve, do not migrate.
    """

    state: str
    current: str | None
    head: str | None


def schema_status(url: str, *, script_location: str | Path | None = None) -> SchemaStatus:
    """The schema of the database at ``url`` (raises ``sqlalchemy.exc.OperationalError`` when
    it cannot be reached)."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return schema_status_of(conn, script_location=script_location)
    finally:
        engine.dispose()


class SchemaNotCurrent(RuntimeError):
    """The database answers but its schema is not at the code's head."""


def require_current_schema(conn: sa.Connection) -> None:
    """Raise ``SchemaNotCurrent`` unless the schema seen through ``conn`` is at head (the
    store's check before a node that started without its database first writes)."""
    status = schema_status_of(conn)
    if status.state != "current":
        raise SchemaNotCurrent(
            f"database schema is {status.state} (at {status.current or 'nothing'}, code needs "
            f"{status.head})")


def schema_status_of(conn: sa.Connection, *,
                     script_location: str | Path | None = None) -> SchemaStatus:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(script_location=script_location))
    heads = set(script.get_heads())
    head = ",".join(sorted(heads)) or None
    current_heads = set(MigrationContext.configure(conn).get_current_heads())
    current = ",".join(sorted(current_heads)) or None
    if not current_heads:
        return SchemaStatus("empty", None, head)
    if current_heads == heads:
        return SchemaStatus("current", current, head)
    known = all(_known(script, rev) for rev in current_heads)
    return SchemaStatus("behind" if known else "unknown", current, head)


def _known(script: Any, rev: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(rev) is not None
    except CommandError:
        return False
