"""Real PostgreSQL for tests: a server for the session, a fresh database per test module.

Which server (``$NG911_TEST_POSTGRES``):

- unset: ``postgresql://postgres@127.0.0.1:5432/postgres`` if it accepts connections (CI and
  the dev box run one there), else a throwaway cluster;
- ``throwaway``: always a throwaway cluster;
- a URL to a maintenance database (``postgresql://user@host:port/postgres``): that server.

A throwaway cluster comes from Debian's ``postgresql`` package (``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/*/bin``): initdb into a temporary directory, started on a free loopback
port with fsync off, run as the ``postgres`` user when we are root, stopped and deleted when the
context (the test session) ends. With neither a server nor the package the tests fail -- they
never skip.

Use ``postgres_url()`` as a context manager anywhere, or the fixtures: ``pg_server`` (session)
and ``pg_url`` (module; a new database, dropped after the module). Import them into a conftest:
``from tests.pg import pg_server, pg_url  # noqa: F401``.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _accepts_connections(url: str) -> bool:
    u = make_url(url)
    try:
        conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username,
                                password=u.password, dbname=u.database or "postgres",
                                connect_timeout=2)
    except psycopg2.OperationalError:
        return False
    conn.close()
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
            if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists()]
    if not dirs:
        raise RuntimeError(
            "no PostgreSQL server reachable at 127.0.0.1:5432 and no initdb/pg_ctl under "
            "/usr/lib/postgresql/*/bin: install Debian's 'postgresql' package "
            "(or set NG911_TEST_POSTGRES to a server URL)")
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start on a free port; yields the URL of its ``postgres`` database."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="ng911-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run(prefix + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", options, "start")
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a maintenance database on a server we may create databases on."""
    choice = os.environ.get("NG911_TEST_POSTGRES", "")
    if choice and choice != "throwaway":
        if not _accepts_connections(choice):
            raise RuntimeError(f"NG911_TEST_POSTGRES={choice} accepts no connections")
        yield choice
    elif choice != "throwaway" and _accepts_connections(DEFAULT_SERVER):
        yield DEFAULT_SERVER
    else:
        with throwaway_cluster() as url:
            yield url


def _admin(server: str, sql: str) -> None:
    u = make_url(server)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username,
                            password=u.password, dbname=u.database or "postgres",
                            connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def postgres_url(server: str | None = None) -> Iterator[str]:
    """A fresh, empty database (on ``server``, else on a server of its own); dropped after."""
    if server is None:
        with postgres_server() as own:
            with postgres_url(own) as url:
                yield url
        return
    name = "ng911_test_" + secrets.token_hex(6)
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def pg_url(pg_server: str) -> Iterator[str]:
    with postgres_url(pg_server) as url:
        yield url
