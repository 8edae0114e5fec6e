"""Store fixtures: real PostgreSQL (tests/pg.py), SQLite files, and the in-memory twin.

``store`` is the contract fixture: the same test runs on ``MemoryStore``, ``SqlStore`` on a
SQLite file and ``SqlStore`` on PostgreSQL. The PostgreSQL database is migrated once per module
and emptied before each test.
"""
from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa

from ng911.store import MemoryStore, SqlStore, migrate
from ng911.store.db import engine_for
from ng911.store.models import metadata
from tests.pg import pg_server, pg_url  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def pg_migrated(pg_url: str) -> str:  # noqa: F811
    migrate(pg_url)
    return pg_url


def empty_tables(url: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def pg_empty(pg_migrated: str) -> str:
    empty_tables(pg_migrated)
    return pg_migrated


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/ng911.db"
    migrate(url)
    return url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[MemoryStore | SqlStore]:
    s: MemoryStore | SqlStore
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqlStore(request.getfixturevalue("sqlite_url"))
    else:
        s = SqlStore(request.getfixturevalue("pg_empty"))
    s.start()
    yield s
    s.stop()
